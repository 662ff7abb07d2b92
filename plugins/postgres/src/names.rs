//! Table names as a plan writes them (`orders`, `sales.orders`,
//! `"Mixed Case"`), resolved to schema and table, and quoted for SQL.

use sluice_sdk::Error;

/// A table, schema-qualified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableName {
    /// Schema (`public` when the plan names none).
    pub schema: String,
    /// Table.
    pub table: String,
}

impl TableName {
    /// Parses `table`, `schema.table` or their double-quoted forms; unquoted
    /// parts fold to lower case, as PostgreSQL folds them. `what` says where
    /// the name came from, for the error.
    pub fn parse(name: &str, what: &str) -> Result<Self, Error> {
        let bad = |why: &str| {
            Error::InvalidParams(format!(
                "{what}: `{name}` is not a table name ({why}); write `table` or `schema.table`"
            ))
        };
        let mut parts = Vec::new();
        let mut chars = name.trim().chars().peekable();
        loop {
            let mut part = String::new();
            if chars.peek() == Some(&'"') {
                chars.next();
                loop {
                    match chars.next() {
                        Some('"') if chars.peek() == Some(&'"') => {
                            chars.next();
                            part.push('"');
                        }
                        Some('"') => break,
                        Some(c) => part.push(c),
                        None => return Err(bad("unterminated quote")),
                    }
                }
            } else {
                while let Some(&c) = chars.peek() {
                    if c == '.' {
                        break;
                    }
                    if !(c.is_alphanumeric() || c == '_' || c == '$') {
                        return Err(bad(&format!("unexpected `{c}`; quote the name")));
                    }
                    part.extend(c.to_lowercase());
                    chars.next();
                }
            }
            if part.is_empty() {
                return Err(bad("empty part"));
            }
            parts.push(part);
            match chars.next() {
                None => break,
                Some('.') => {}
                Some(c) => return Err(bad(&format!("unexpected `{c}` after a quoted part"))),
            }
        }
        match <[String; 1]>::try_from(parts.clone()) {
            Ok([table]) => Ok(TableName {
                schema: "public".to_string(),
                table,
            }),
            Err(_) => match <[String; 2]>::try_from(parts) {
                Ok([schema, table]) => Ok(TableName { schema, table }),
                Err(_) => Err(bad("more than two parts")),
            },
        }
    }

    /// `"schema"."table"`, for SQL text.
    pub fn quoted(&self) -> String {
        format!("{}.{}", quote_ident(&self.schema), quote_ident(&self.table))
    }

    /// The name the manifest and the host use: `table` in `public`, else
    /// `schema.table`, each part as stored in the catalog (the host quotes
    /// each `.`-separated part as is).
    pub fn display(&self) -> String {
        if self.schema == "public" {
            self.table.clone()
        } else {
            format!("{}.{}", self.schema, self.table)
        }
    }

    /// Reads back a name written by [`TableName::display`].
    pub fn from_manifest(name: &str) -> Self {
        match name.split_once('.') {
            Some((schema, table)) => TableName {
                schema: schema.to_string(),
                table: table.to_string(),
            },
            None => TableName {
                schema: "public".to_string(),
                table: name.to_string(),
            },
        }
    }
}

/// `"name"`, inner quotes doubled.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// `'text'`, inner quotes doubled (standard-conforming strings are on in
/// every supported server).
pub fn quote_literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> TableName {
        TableName::parse(s, "test").unwrap()
    }

    #[test]
    fn names_fold_and_qualify_like_postgres() {
        assert_eq!(parse("Orders").quoted(), r#""public"."orders""#);
        assert_eq!(parse("sales.orders").quoted(), r#""sales"."orders""#);
        assert_eq!(parse(r#""Sales"."Big ""x""""#).table, r#"Big "x""#);
        assert_eq!(parse("orders").display(), "orders");
        assert_eq!(parse("public.orders").display(), "orders");
        assert_eq!(parse("sales.orders").display(), "sales.orders");
        assert_eq!(parse(r#""Orders""#).display(), "Orders");
        for name in ["orders", "sales.orders", "Orders", "sales.Big x"] {
            assert_eq!(TableName::from_manifest(name).display(), name);
        }
    }

    #[test]
    fn bad_names_say_why() {
        for bad in ["", "a.b.c", "a b", "orders;drop", "\"open", "a..b"] {
            let err = TableName::parse(bad, "params.tables[0]").unwrap_err();
            match err {
                Error::InvalidParams(m) => assert!(m.starts_with("params.tables[0]"), "{m}"),
                other => panic!("{other:?}"),
            }
        }
    }
}
