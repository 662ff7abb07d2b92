//! `sqitch.plan`: pragmas, changes with their dependencies, tags, reworked
//! changes and notes, and the ids sqitch derives from them.
//!
//! The ids are sqitch's own (`App::Sqitch::Plan::Change::id`): SHA-1 of
//! `"change <len>\0" + info`, where info is the lines `project …`, `uri …`
//! (if any), `change <name>`, `parent <previous change id>` (if any),
//! `planner <name> <email>`, `date <timestamp>`, the requires and conflicts
//! lists, and a blank line plus the note. Tags likewise with `tag …` and the
//! id of the change they follow. Same ids, same registry rows: a project
//! deployed by sluice reads as deployed to sqitch and back.

use crate::sha1;

/// A plan line sqitch would not accept, with where it is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}:{line}: {message}")]
pub struct PlanError {
    /// The plan file, as the project names it.
    pub file: String,
    /// 1-based line.
    pub line: usize,
    /// What is wrong.
    pub message: String,
}

/// A dependency as written inside `[…]`: `change`, `change@tag`, `@tag`,
/// `project:change`, each optionally `!` (a conflict).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dependency {
    /// The project, when written (`other:change`).
    pub project: Option<String>,
    /// The change name, if any.
    pub change: Option<String>,
    /// The tag, without `@`, if any.
    pub tag: Option<String>,
    /// `!dep`: the change must not be deployed.
    pub conflict: bool,
}

impl Dependency {
    /// As sqitch writes it in ids and the registry (`Depend::as_string`):
    /// without the `!`.
    pub fn as_string(&self) -> String {
        let mut out = String::new();
        if let Some(p) = &self.project {
            out.push_str(p);
            out.push(':');
        }
        if let Some(c) = &self.change {
            out.push_str(c);
        }
        if let Some(t) = &self.tag {
            out.push('@');
            out.push_str(t);
        }
        out
    }

    /// Whether it names another project than `project`.
    pub fn is_cross_project(&self, project: &str) -> bool {
        self.project.as_deref().is_some_and(|p| p != project)
    }
}

/// Who planned a change or tag, and when (as written in the plan).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Planned {
    /// Planner name.
    pub name: String,
    /// Planner email.
    pub email: String,
    /// ISO 8601 UTC timestamp, as written (`2024-01-02T03:04:05Z`).
    pub at: String,
}

/// A tag of the plan (`@v1.0 …`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tag {
    /// Name without `@`.
    pub name: String,
    /// Planner and time.
    pub planned: Planned,
    /// The note, unescaped.
    pub note: String,
    /// sqitch's tag id.
    pub id: String,
    /// Line in the plan.
    pub line: usize,
}

/// A change of the plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// Name (also its script file stem).
    pub name: String,
    /// `[dep]` entries.
    pub requires: Vec<Dependency>,
    /// `[!dep]` entries.
    pub conflicts: Vec<Dependency>,
    /// Planner and time.
    pub planned: Planned,
    /// The note, unescaped.
    pub note: String,
    /// Tags placed right after this change (before the next change).
    pub tags: Vec<Tag>,
    /// For a change reworked later in the plan: the tags between this
    /// instance and the next one; its scripts are `name@<tag>.sql`.
    pub rework_tags: Vec<String>,
    /// sqitch's change id.
    pub id: String,
    /// Line in the plan.
    pub line: usize,
}

impl Change {
    /// Whether a later instance of the same change exists (its scripts then
    /// carry a tag suffix).
    pub fn is_reworked(&self) -> bool {
        !self.rework_tags.is_empty()
    }
}

/// A parsed `sqitch.plan`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqitchPlan {
    /// `%project`.
    pub project: String,
    /// `%uri`, if any.
    pub uri: Option<String>,
    /// `%syntax-version`, if any.
    pub syntax_version: Option<String>,
    /// Changes in plan order (a reworked change appears once per instance).
    pub changes: Vec<Change>,
}

impl SqitchPlan {
    /// Parses the plan text; `file` names it in errors.
    pub fn parse(text: &str, file: &str) -> Result<SqitchPlan, PlanError> {
        let err = |line: usize, message: String| PlanError {
            file: file.to_string(),
            line,
            message,
        };
        let mut project = None;
        let mut uri = None;
        let mut syntax_version = None;
        let mut changes: Vec<Change> = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            let line_no = i + 1;
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            if let Some(pragma) = line.strip_prefix('%') {
                let (key, value) = pragma
                    .split_once('=')
                    .ok_or_else(|| err(line_no, format!("pragma `{line}` has no `=`")))?;
                let value = value.trim().to_string();
                match key.trim() {
                    "project" => project = Some(value),
                    "uri" => uri = Some(value),
                    "syntax-version" => syntax_version = Some(value),
                    // Unknown pragmas are ignored by sqitch as well.
                    _ => {}
                }
                continue;
            }
            let (body, note) = split_note(line);
            if let Some(tag) = body.strip_prefix('@') {
                let (name, rest) = first_word(tag);
                check_name(name).map_err(|m| err(line_no, format!("tag `@{name}`: {m}")))?;
                let planned = parse_planned(rest).map_err(|m| err(line_no, m))?;
                let Some(change) = changes.last_mut() else {
                    return Err(err(line_no, format!("tag `@{name}` before any change")));
                };
                change.tags.push(Tag {
                    name: name.to_string(),
                    planned,
                    note,
                    id: String::new(),
                    line: line_no,
                });
                continue;
            }
            let body = body.strip_prefix('+').unwrap_or(body).trim_start();
            if body.starts_with('-') {
                return Err(err(
                    line_no,
                    "`-change` (a revert line of a sqitch 0.x plan) is not supported".into(),
                ));
            }
            let (name, mut rest) = first_word(body);
            let (name, deps_inline) = match name.split_once('[') {
                Some((n, _)) => (n, true),
                None => (name, false),
            };
            check_name(name).map_err(|m| err(line_no, format!("change `{name}`: {m}")))?;
            let mut requires = Vec::new();
            let mut conflicts = Vec::new();
            if deps_inline || rest.starts_with('[') {
                let from = if deps_inline {
                    body.find('[').unwrap_or(0)
                } else {
                    body.len() - rest.len()
                };
                let close = body[from..]
                    .find(']')
                    .ok_or_else(|| err(line_no, format!("change `{name}`: `[` without `]`")))?
                    + from;
                for word in body[from + 1..close].split_whitespace() {
                    let dep = parse_dependency(word)
                        .map_err(|m| err(line_no, format!("change `{name}`: {m}")))?;
                    if dep.conflict {
                        conflicts.push(dep);
                    } else {
                        requires.push(dep);
                    }
                }
                rest = body[close + 1..].trim_start();
            }
            let planned =
                parse_planned(rest).map_err(|m| err(line_no, format!("change `{name}`: {m}")))?;
            changes.push(Change {
                name: name.to_string(),
                requires,
                conflicts,
                planned,
                note,
                tags: Vec::new(),
                rework_tags: Vec::new(),
                id: String::new(),
                line: line_no,
            });
        }
        let project = project.ok_or_else(|| err(1, "no `%project=` pragma".into()))?;
        let mut plan = SqitchPlan {
            project,
            uri,
            syntax_version,
            changes,
        };
        plan.link_reworks(file)?;
        plan.compute_ids();
        Ok(plan)
    }

    /// Each earlier instance of a reworked change gets the tags between it
    /// and the next instance; sqitch requires at least one.
    fn link_reworks(&mut self, file: &str) -> Result<(), PlanError> {
        for i in 0..self.changes.len() {
            let name = self.changes[i].name.clone();
            let Some(next) = (i + 1..self.changes.len()).find(|&j| self.changes[j].name == name)
            else {
                continue;
            };
            let tags: Vec<String> = self.changes[i..next]
                .iter()
                .flat_map(|c| c.tags.iter().map(|t| t.name.clone()))
                .collect();
            if tags.is_empty() {
                return Err(PlanError {
                    file: file.to_string(),
                    line: self.changes[next].line,
                    message: format!(
                        "change `{name}` is planned again with no tag since line {}: a rework needs a tag between the two",
                        self.changes[i].line
                    ),
                });
            }
            self.changes[i].rework_tags = tags;
        }
        Ok(())
    }

    fn compute_ids(&mut self) {
        let mut parent: Option<String> = None;
        for change in &mut self.changes {
            let mut info = vec![format!("project {}", self.project)];
            if let Some(uri) = &self.uri {
                info.push(format!("uri {uri}"));
            }
            info.push(format!("change {}", change.name));
            if let Some(p) = &parent {
                info.push(format!("parent {p}"));
            }
            info.push(format!(
                "planner {} <{}>",
                change.planned.name, change.planned.email
            ));
            info.push(format!("date {}", change.planned.at));
            if !change.requires.is_empty() {
                let deps: Vec<String> = change.requires.iter().map(|d| d.as_string()).collect();
                info.push(format!("requires\n  + {}", deps.join("\n  + ")));
            }
            if !change.conflicts.is_empty() {
                let deps: Vec<String> = change.conflicts.iter().map(|d| d.as_string()).collect();
                info.push(format!("conflicts\n  - {}", deps.join("\n  - ")));
            }
            if !change.note.is_empty() {
                info.push(String::new());
                info.push(change.note.clone());
            }
            change.id = object_id("change", &info.join("\n"));
            for tag in &mut change.tags {
                let mut info = vec![format!("project {}", self.project)];
                if let Some(uri) = &self.uri {
                    info.push(format!("uri {uri}"));
                }
                info.push(format!("tag @{}", tag.name));
                info.push(format!("change {}", change.id));
                info.push(format!(
                    "planner {} <{}>",
                    tag.planned.name, tag.planned.email
                ));
                info.push(format!("date {}", tag.planned.at));
                if !tag.note.is_empty() {
                    info.push(String::new());
                    info.push(tag.note.clone());
                }
                tag.id = object_id("tag", &info.join("\n"));
            }
            parent = Some(change.id.clone());
        }
    }

    /// The change a step names: `name` is its latest instance, `name@tag`
    /// the instance that tag follows (a reworked change's earlier version).
    pub fn find(&self, spec: &str) -> Option<&Change> {
        match spec.split_once('@') {
            None => self.changes.iter().rev().find(|c| c.name == spec),
            Some((name, tag)) => {
                let tag_at = self
                    .changes
                    .iter()
                    .position(|c| c.tags.iter().any(|t| t.name == tag))?;
                self.changes[..=tag_at]
                    .iter()
                    .rev()
                    .find(|c| c.name == name)
            }
        }
    }

    /// Index of a change in plan order.
    pub fn index_of(&self, change: &Change) -> Option<usize> {
        self.changes.iter().position(|c| c.id == change.id)
    }
}

/// `"<kind> <len>\0<info>"` hashed, as sqitch computes object ids (the
/// length in bytes of the UTF-8 info).
fn object_id(kind: &str, info: &str) -> String {
    let mut content = format!("{kind} {}\0", info.len()).into_bytes();
    content.extend_from_slice(info.as_bytes());
    sha1::hex(&content)
}

fn split_note(line: &str) -> (&str, String) {
    let bytes = line.as_bytes();
    for (i, b) in bytes.iter().enumerate() {
        if *b == b'#' && (i == 0 || bytes[i - 1].is_ascii_whitespace()) {
            let note = line[i + 1..].trim();
            return (line[..i].trim_end(), unescape_note(note));
        }
    }
    (line, String::new())
}

/// Notes are one line in the plan: sqitch writes newlines as `\n` and
/// backslashes as `\\`.
fn unescape_note(note: &str) -> String {
    let mut out = String::new();
    let mut chars = note.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            match chars.next() {
                Some('n') => out.push('\n'),
                Some('\\') => out.push('\\'),
                Some(other) => {
                    out.push('\\');
                    out.push(other);
                }
                None => out.push('\\'),
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn first_word(s: &str) -> (&str, &str) {
    let s = s.trim_start();
    match s.find(char::is_whitespace) {
        Some(i) => (&s[..i], s[i..].trim_start()),
        None => (s, ""),
    }
}

fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("empty name".into());
    }
    if name.contains([':', '@', '#', '[', ']', '\\']) {
        return Err("names cannot contain `:`, `@`, `#`, `[`, `]` or `\\`".into());
    }
    Ok(())
}

fn parse_dependency(word: &str) -> Result<Dependency, String> {
    let (conflict, word) = match word.strip_prefix('!') {
        Some(rest) => (true, rest),
        None => (false, word),
    };
    let (project, rest) = match word.split_once(':') {
        Some((p, rest)) => (Some(p.to_string()), rest),
        None => (None, word),
    };
    let (change, tag) = match rest.split_once('@') {
        Some((c, t)) => (c, Some(t.to_string())),
        None => (rest, None),
    };
    if change.is_empty() && tag.is_none() {
        return Err(format!("dependency `{word}` names nothing"));
    }
    Ok(Dependency {
        project,
        change: (!change.is_empty()).then(|| change.to_string()),
        tag,
        conflict,
    })
}

/// `2024-01-02T03:04:05Z Name Surname <email>`.
fn parse_planned(rest: &str) -> Result<Planned, String> {
    let (at, who) = first_word(rest);
    if !(at.len() >= 20 && at.ends_with('Z') && at.as_bytes().get(10) == Some(&b'T')) {
        return Err(format!(
            "expected the planned time (`2024-01-02T03:04:05Z`), found `{at}`"
        ));
    }
    let (open, close) = match (who.rfind('<'), who.rfind('>')) {
        (Some(o), Some(c)) if o < c => (o, c),
        _ => {
            return Err(format!(
                "expected the planner as `Name <email>`, found `{who}`"
            ))
        }
    };
    Ok(Planned {
        name: who[..open].trim().to_string(),
        email: who[open + 1..close].trim().to_string(),
        at: at.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const PLAN: &str = "%syntax-version=1.0.0
%project=flipr
%uri=https://github.com/sqitchers/sqitch-intro/

appschema 2013-12-30T23:49:00Z Marge N. O'Vera <marge@example.com> # App schema.
users [appschema] 2013-12-30T23:50:00Z Marge N. O'Vera <marge@example.com> # Users.
# a comment line
insert_user [users appschema !old other:base@v2] 2013-12-30T23:51:00Z Marge N. O'Vera <marge@example.com> # Two\\nlines.
@v1.0.0 2013-12-31T00:00:00Z Marge N. O'Vera <marge@example.com> # Tag v1.0.0.

insert_user [insert_user@v1.0.0] 2014-01-02T00:00:00Z Marge N. O'Vera <marge@example.com> # Reworked.
";

    #[test]
    fn parses_pragmas_changes_tags_reworks_and_notes() {
        let plan = SqitchPlan::parse(PLAN, "sqitch.plan").unwrap();
        assert_eq!(plan.project, "flipr");
        assert_eq!(
            plan.uri.as_deref(),
            Some("https://github.com/sqitchers/sqitch-intro/")
        );
        assert_eq!(plan.syntax_version.as_deref(), Some("1.0.0"));
        let names: Vec<&str> = plan.changes.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["appschema", "users", "insert_user", "insert_user"]);
        let insert = &plan.changes[2];
        assert_eq!(
            insert
                .requires
                .iter()
                .map(Dependency::as_string)
                .collect::<Vec<_>>(),
            ["users", "appschema", "other:base@v2"]
        );
        assert!(insert.requires[2].is_cross_project("flipr"));
        assert_eq!(insert.conflicts[0].as_string(), "old");
        assert_eq!(insert.note, "Two\nlines.");
        assert_eq!(insert.planned.name, "Marge N. O'Vera");
        assert_eq!(insert.planned.email, "marge@example.com");
        assert_eq!(insert.tags[0].name, "v1.0.0");
        assert_eq!(insert.rework_tags, ["v1.0.0"]);
        assert!(!plan.changes[3].is_reworked());
        assert_eq!(plan.find("insert_user").unwrap().line, 11);
        assert_eq!(plan.find("insert_user@v1.0.0").unwrap().line, 8);
        assert!(plan.find("nope").is_none());
    }

    #[test]
    fn change_ids_are_sqitchs() {
        let plan = SqitchPlan::parse(PLAN, "sqitch.plan").unwrap();
        // Recomputed by hand from sqitch's formula, independently of
        // `compute_ids`: the first change has no parent.
        let info = "project flipr\nuri https://github.com/sqitchers/sqitch-intro/\nchange appschema\nplanner Marge N. O'Vera <marge@example.com>\ndate 2013-12-30T23:49:00Z\n\nApp schema.";
        let expected = sha1::hex(format!("change {}\0{info}", info.len()).as_bytes());
        assert_eq!(plan.changes[0].id, expected);
        let info = format!(
            "project flipr\nuri https://github.com/sqitchers/sqitch-intro/\nchange users\nparent {}\nplanner Marge N. O'Vera <marge@example.com>\ndate 2013-12-30T23:50:00Z\nrequires\n  + appschema\n\nUsers.",
            plan.changes[0].id
        );
        let expected = sha1::hex(format!("change {}\0{info}", info.len()).as_bytes());
        assert_eq!(plan.changes[1].id, expected);
        // Reworked instances differ (parent, date), so their ids do too.
        assert_ne!(plan.changes[2].id, plan.changes[3].id);
        assert_eq!(plan.changes[2].tags[0].id.len(), 40);
    }

    #[test]
    fn errors_name_the_line() {
        let e = SqitchPlan::parse(
            "%project=p\na 2013-12-30T23:49:00Z X <x@y>\na 2013-12-30T23:49:00Z X <x@y>\n",
            "p/sqitch.plan",
        )
        .unwrap_err();
        assert_eq!(e.line, 3);
        assert!(
            e.to_string()
                .starts_with("p/sqitch.plan:3: change `a` is planned again"),
            "{e}"
        );
        let e = SqitchPlan::parse("%project=p\na yesterday X <x@y>\n", "sqitch.plan").unwrap_err();
        assert_eq!(e.line, 2);
        assert!(e.message.contains("planned time"), "{e}");
        let e = SqitchPlan::parse("a 2013-12-30T23:49:00Z X <x@y>\n", "sqitch.plan").unwrap_err();
        assert!(e.message.contains("%project"), "{e}");
        let e = SqitchPlan::parse(
            "%project=p\n@v1 2013-12-30T23:49:00Z X <x@y>\n",
            "sqitch.plan",
        )
        .unwrap_err();
        assert!(e.message.contains("before any change"), "{e}");
    }
}
