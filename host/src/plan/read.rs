//! Step one of loading: the plan file read and parsed as written, every
//! value keeping its place in the text (`toml` spans), and [`Source`], which
//! turns such a place into the `file:line:column` of a [`PlanError`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

use super::{Access, Action, ApprovalPoint, BreachScope, Limits, Location, PlanError};

/// The plan file's text, for locating what is wrong in it.
pub(super) struct Source<'a> {
    pub(super) path: &'a Path,
    pub(super) text: &'a str,
}

impl Source<'_> {
    /// The line and column (1-based, in characters) of a byte offset.
    pub(super) fn location(&self, offset: usize) -> Location {
        let offset = offset.min(self.text.len());
        let before = &self.text[..offset];
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        Location {
            file: self.path.to_path_buf(),
            line,
            column: self.text[line_start..offset].chars().count() + 1,
        }
    }

    /// A [`PlanError::Invalid`] at a byte offset, with its line for display.
    pub(super) fn error(&self, offset: usize, message: String) -> PlanError {
        let location = self.location(offset);
        let source_line = self
            .text
            .lines()
            .nth(location.line - 1)
            .unwrap_or("")
            .to_string();
        PlanError::Invalid {
            location,
            message,
            source_line,
        }
    }

    /// Names of values, probes, targets, plugins, steps and file grants:
    /// short and plain, since they appear in journals, leases and guest paths.
    pub(super) fn check_name(
        &self,
        name: &str,
        offset: usize,
        what: &str,
    ) -> Result<(), PlanError> {
        let ok = !name.is_empty()
            && name.len() <= 64
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if ok {
            Ok(())
        } else {
            Err(self.error(
                offset,
                format!("{what} `{name}` must be 1–64 characters of letters, digits, `-` and `_`"),
            ))
        }
    }
}

/// The plan file's absolute path and text.
pub(super) fn read(path: &Path) -> Result<(PathBuf, String), PlanError> {
    let path = std::path::absolute(path).map_err(|source| PlanError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let text = std::fs::read_to_string(&path).map_err(|source| PlanError::Read {
        path: path.clone(),
        source,
    })?;
    Ok((path, text))
}

/// The text parsed as written: TOML syntax, unknown keys and values of the
/// wrong type are refused here, where `toml` says.
pub(super) fn parse(src: &Source<'_>) -> Result<PlanFile, PlanError> {
    toml::from_str(src.text).map_err(|e| {
        let offset = e.span().map_or(0, |s| s.start);
        src.error(offset, e.message().trim_end().to_string())
    })
}

// ---- the file as written ----------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct PlanFile {
    pub(super) plan: Option<PlanHeader>,
    #[serde(default)]
    pub(super) targets: BTreeMap<String, Spanned<TargetFile>>,
    #[serde(default)]
    pub(super) plugins: BTreeMap<String, Spanned<PluginFile>>,
    #[serde(default)]
    pub(super) steps: Vec<Spanned<StepFile>>,
    #[serde(default)]
    pub(super) values: BTreeMap<String, Spanned<ValueFile>>,
    #[serde(default)]
    pub(super) probes: BTreeMap<String, Spanned<toml::Value>>,
}

#[derive(Deserialize)]
#[serde(untagged)]
pub(super) enum ValueFile {
    Literal(String),
    Source(ValueSourceFile),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ValueSourceFile {
    pub(super) env: Option<String>,
    pub(super) file: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileGrantFile {
    pub(super) name: Spanned<String>,
    pub(super) path: Spanned<String>,
    pub(super) access: Access,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct PlanHeader {
    pub(super) name: Option<String>,
    pub(super) lease_seconds: Option<u64>,
    pub(super) journal: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) probe_hosts: Vec<Spanned<String>>,
    #[allow(dead_code)] // shown by `sluice plan` in a later change; accepted now
    description: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct TargetFile {
    pub(super) kind: Spanned<String>,
    pub(super) path: Option<Spanned<String>>,
    pub(super) connection: Option<Spanned<String>>,
    pub(super) attach: Option<Spanned<BTreeMap<String, Spanned<String>>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct PluginFile {
    pub(super) path: Spanned<String>,
    pub(super) sha256: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct StepFile {
    pub(super) id: Spanned<String>,
    pub(super) plugin: Spanned<String>,
    pub(super) target: Spanned<String>,
    pub(super) access: Spanned<Access>,
    pub(super) tables: Option<Vec<Spanned<String>>>,
    pub(super) key_prefixes: Option<Vec<Spanned<String>>>,
    #[serde(default)]
    pub(super) files: Vec<Spanned<FileGrantFile>>,
    #[serde(default)]
    pub(super) values: Vec<Spanned<String>>,
    #[serde(default)]
    pub(super) probes: Vec<Spanned<String>>,
    #[allow(dead_code)] // free text for readers of the plan
    description: Option<String>,
    pub(super) params: Option<Spanned<toml::Table>>,
    #[serde(default)]
    pub(super) thresholds: Vec<Spanned<String>>,
    #[serde(default)]
    pub(super) bands: Vec<Spanned<BandFile>>,
    pub(super) approval: Option<ApprovalPoint>,
    pub(super) watch: Option<Spanned<WatchFile>>,
    pub(super) limits: Option<Spanned<Limits>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct BandFile {
    pub(super) when: Spanned<String>,
    pub(super) action: Action,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct WatchFile {
    pub(super) every: Spanned<String>,
    #[serde(rename = "for")]
    pub(super) duration: Spanned<String>,
    #[serde(default)]
    pub(super) on_breach: BreachScope,
}

#[cfg(test)]
mod tests {
    use crate::plan::test_plan::*;
    use crate::plan::{load, PlanError};

    #[test]
    fn a_name_is_at_most_64_plain_characters() {
        let long = "v".repeat(65);
        assert_eq!(
            refused(&format!("[values]\n{long} = \"x\"\n")),
            format!("2:69: value `{long}` must be 1–64 characters of letters, digits, `-` and `_`")
        );
        let plan = loads(&format!("[values]\n{} = \"x\"\n\n{STEP}", &long[1..]));
        assert!(plan.values.contains_key(&long[1..]));
    }

    #[test]
    fn a_plan_that_cannot_be_read_is_named_without_a_location() {
        let dir = tempfile::tempdir().unwrap();
        let err = load(&dir.path().join("nope.toml")).unwrap_err();
        assert!(matches!(err, PlanError::Read { .. }));
        assert_eq!(
            err.to_string()
                .replace(&dir.path().display().to_string(), "<dir>"),
            "cannot read plan <dir>/nope.toml: No such file or directory (os error 2)"
        );
        assert!(err.snippet().is_none());
    }

    #[test]
    fn a_toml_syntax_error_is_located() {
        assert_eq!(
            refused("[targets.db\nkind = \"sqlite\"\n"),
            "1:12: unclosed table, expected `]`"
        );
    }

    #[test]
    fn an_unknown_key_is_named_where_it_is_written() {
        assert_eq!(refused(&step("acess = \"x\"\n")), "13:1: unknown field `acess`, expected one of `id`, `plugin`, `target`, `access`, `tables`, `key_prefixes`, `files`, `values`, `probes`, `description`, `params`, `thresholds`, `bands`, `approval`, `watch`, `limits`");
    }

    #[test]
    fn a_value_of_the_wrong_kind_is_located() {
        assert_eq!(
            refused(&STEP.replace("\"read-write\"", "\"rw\"")),
            "12:10: unknown variant `rw`, expected `read-only` or `read-write`"
        );
    }

    #[test]
    fn a_missing_key_points_at_its_table() {
        assert_eq!(
            refused("[targets.db]\npath = \"x\"\n"),
            "1:1: missing field `kind`"
        );
    }

    #[test]
    fn the_snippet_puts_a_caret_under_the_column() {
        let dir = write(&step("acess = \"x\"\n"));
        let err = load(&dir.path().join("sluice.toml")).unwrap_err();
        assert_eq!(err.snippet().unwrap(), "   13 | acess = \"x\"\n      | ^");
    }
}
