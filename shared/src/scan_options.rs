//! What a resource asks a scan to read: which databases, which schemas and tables, and how
//! deep. Parsed from the resource's `options` JSON by the API (to reject bad values with a
//! 422) and by the worker (to scan), with the same parser, so they never disagree.

use regex::{Regex, RegexBuilder};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// Which databases of the server a scan reads.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum DatabaseSelection {
    /// Only the resource's own `database` (the default: it is what the credentials were
    /// registered for, and scanning more is an explicit choice).
    #[default]
    Resource,
    /// Every database that accepts connections (templates excluded). On MySQL/MariaDB, every
    /// non-system database (MySQL's databases are its schemas).
    All,
    /// Exactly these.
    List(Vec<String>),
}

/// How much of each database a scan reads.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub enum Depth {
    /// Databases and schemas only (`depth: 1`).
    Schemas = 1,
    /// Also tables and views, without their columns, constraints and indexes (`depth: 2`).
    Tables = 2,
    /// Everything (`depth: 3`, the default: the catalog is only useful with columns).
    #[default]
    Everything = 3,
}

/// A resource's scan options, from its `options` JSON object:
///
/// ```json
/// { "databases": "all" | ["a", "b"], "depth": 1 | 2 | 3,
///   "include_schemas": ["^sales"], "exclude_schemas": ["_archive$"],
///   "include_tables": [], "exclude_tables": ["^tmp_"] }
/// ```
///
/// Defaults (an empty object): the resource's own database, depth 3, every schema and
/// table. System schemas (`pg_catalog`, `information_schema`, `pg_toast`, temp schemas;
/// `mysql`, `sys`, `performance_schema`, `information_schema`) are always left out by the
/// scanners' SQL, so no default pattern is needed for them.
///
/// Patterns are Rust `regex` syntax and must match the *whole* name (they are anchored),
/// because names are identifiers, not text: `sales` means the schema `sales`, not
/// `presales`; write `.*sales.*` for a substring. Schema patterns match the schema name,
/// table patterns the table (or view) name alone. An include list, when non-empty, keeps
/// only what matches one of its patterns; an exclude list then drops what matches any.
/// Unknown keys are rejected, so a typo never silently scans everything.
///
/// It is stored as JSON (`sqlx::types::Json<ScanOptions>`) in the form above, with only the
/// keys that differ from the defaults; reading it back parses it again, so stored options are
/// always ones this parser accepts.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(try_from = "Value", into = "Value")]
pub struct ScanOptions {
    /// Which databases of the server to scan.
    pub databases: DatabaseSelection,
    /// How far down the catalog to read.
    pub depth: Depth,
    /// Empty keeps every schema.
    pub include_schemas: Vec<Pattern>,
    /// Applied after `include_schemas`.
    pub exclude_schemas: Vec<Pattern>,
    /// Empty keeps every table.
    pub include_tables: Vec<Pattern>,
    /// Applied after `include_tables`.
    pub exclude_tables: Vec<Pattern>,
}

/// A name pattern as the client wrote it, with its anchored, compiled form.
#[derive(Debug, Clone)]
pub struct Pattern {
    source: String,
    regex: Regex,
}

impl Pattern {
    /// Whether the whole name matches.
    pub fn is_match(&self, name: &str) -> bool {
        self.regex.is_match(name)
    }

    /// The pattern as the client wrote it.
    pub fn as_str(&self) -> &str {
        &self.source
    }
}

impl TryFrom<Value> for ScanOptions {
    type Error = String;

    fn try_from(value: Value) -> Result<Self, String> {
        Self::parse(&value)
    }
}

impl From<ScanOptions> for Value {
    fn from(options: ScanOptions) -> Self {
        let mut object = serde_json::Map::new();
        match &options.databases {
            DatabaseSelection::Resource => {}
            DatabaseSelection::All => {
                object.insert("databases".into(), json!("all"));
            }
            DatabaseSelection::List(names) => {
                object.insert("databases".into(), json!(names));
            }
        }
        if options.depth != Depth::default() {
            object.insert("depth".into(), json!(options.depth as u8));
        }
        for (key, patterns) in [
            ("include_schemas", &options.include_schemas),
            ("exclude_schemas", &options.exclude_schemas),
            ("include_tables", &options.include_tables),
            ("exclude_tables", &options.exclude_tables),
        ] {
            if !patterns.is_empty() {
                let sources: Vec<&str> = patterns.iter().map(Pattern::as_str).collect();
                object.insert(key.into(), json!(sources));
            }
        }
        Value::Object(object)
    }
}

/// At most this many names per `databases` list.
pub const MAX_LIST: usize = 100;
/// At most this many patterns in all four pattern lists together: enough for any real filter.
pub const MAX_PATTERNS: usize = 32;
/// Longest pattern, in bytes.
pub const MAX_PATTERN: usize = 500;
/// Compiled size bound per pattern (the regex crate's `size_limit`): a real filter compiles to
/// a few KB; Unicode-class repetitions such as `\w{20}` are what exceed it.
const PATTERN_SIZE_LIMIT: usize = 64 * 1024;
/// Lazy-DFA cache bound per pattern (`dfa_size_limit`), the memory matching may grow to.
const PATTERN_DFA_LIMIT: usize = 64 * 1024;
// Together: at most MAX_PATTERNS × (PATTERN_SIZE_LIMIT + PATTERN_DFA_LIMIT) = 4 MiB for the
// worst options a resource may hold, in the API while parsing and in a worker per sync.

/// The `options` object as the OpenAPI document describes it (written by hand: the type is
/// parsed from JSON, not derived).
impl utoipa::PartialSchema for ScanOptions {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        let patterns = |what: &str| {
            json!({
                "type": "array",
                "maxItems": MAX_PATTERNS,
                "items": { "type": "string", "maxLength": MAX_PATTERN },
                "description": format!("Regexes matching the whole {what} name."),
            })
        };
        let schema = json!({
            "type": "object",
            "description": "What a sync reads; an empty object (the default) is the resource's own \
                database, every schema and table, depth 3. Unknown keys are a 422.",
            "additionalProperties": false,
            "properties": {
                "databases": {
                    "description": "`all`, or a list of database names; absent: the resource's `database`.",
                    "oneOf": [
                        { "type": "string", "enum": ["all"] },
                        {
                            "type": "array", "minItems": 1, "maxItems": MAX_LIST,
                            "items": { "type": "string", "minLength": 1, "maxLength": 255 },
                        },
                    ],
                },
                "depth": {
                    "type": "integer", "enum": [1, 2, 3],
                    "description": "1 databases and schemas, 2 also tables and views, 3 also columns, constraints and indexes.",
                },
                "include_schemas": patterns("schema"),
                "exclude_schemas": patterns("schema"),
                "include_tables": patterns("table"),
                "exclude_tables": patterns("table"),
            },
        });
        serde_json::from_value(schema).expect("a valid schema")
    }
}

impl utoipa::ToSchema for ScanOptions {}

impl ScanOptions {
    /// Parses a resource's `options`. The error says which key is wrong and why.
    pub fn parse(options: &Value) -> Result<Self, String> {
        let object = match options {
            Value::Null => return Ok(Self::default()),
            Value::Object(object) => object,
            _ => return Err("`options` must be a JSON object".into()),
        };
        let mut parsed = Self::default();
        for (key, value) in object {
            match key.as_str() {
                "databases" => parsed.databases = parse_databases(value)?,
                "depth" => {
                    parsed.depth = match value.as_u64() {
                        Some(1) => Depth::Schemas,
                        Some(2) => Depth::Tables,
                        Some(3) => Depth::Everything,
                        _ => return Err("`options.depth` must be 1, 2 or 3".into()),
                    }
                }
                "include_schemas" => parsed.include_schemas = parse_patterns(key, value)?,
                "exclude_schemas" => parsed.exclude_schemas = parse_patterns(key, value)?,
                "include_tables" => parsed.include_tables = parse_patterns(key, value)?,
                "exclude_tables" => parsed.exclude_tables = parse_patterns(key, value)?,
                other => {
                    return Err(format!(
                        "`options.{other}` is not a scan option (expected databases, depth, \
                         include_schemas, exclude_schemas, include_tables, exclude_tables)"
                    ));
                }
            }
        }
        let patterns = parsed.include_schemas.len()
            + parsed.exclude_schemas.len()
            + parsed.include_tables.len()
            + parsed.exclude_tables.len();
        if patterns > MAX_PATTERNS {
            return Err(format!(
                "`options` holds {patterns} patterns; at most {MAX_PATTERNS} in all four lists together"
            ));
        }
        Ok(parsed)
    }

    /// The databases to scan, given the resource's own database and, for `All`, the
    /// server's list.
    pub fn database_names(&self, resource_database: &str) -> Option<Vec<String>> {
        match &self.databases {
            DatabaseSelection::Resource => Some(vec![resource_database.to_owned()]),
            DatabaseSelection::List(names) => Some(names.clone()),
            DatabaseSelection::All => None,
        }
    }

    /// Whether the schema filters keep `schema`.
    pub fn schema_included(&self, schema: &str) -> bool {
        selected(&self.include_schemas, &self.exclude_schemas, schema)
    }

    /// Whether `table` is kept: its schema must be, and then the table filters must.
    pub fn table_included(&self, schema: &str, table: &str) -> bool {
        self.schema_included(schema) && selected(&self.include_tables, &self.exclude_tables, table)
    }
}

fn selected(include: &[Pattern], exclude: &[Pattern], name: &str) -> bool {
    (include.is_empty() || include.iter().any(|r| r.is_match(name)))
        && !exclude.iter().any(|r| r.is_match(name))
}

fn parse_databases(value: &Value) -> Result<DatabaseSelection, String> {
    const SHAPE: &str = "`options.databases` must be \"all\" or a non-empty list of names";
    match value {
        Value::String(s) if s == "all" => Ok(DatabaseSelection::All),
        Value::Array(items) if !items.is_empty() && items.len() <= MAX_LIST => {
            let mut names = Vec::with_capacity(items.len());
            for item in items {
                match item.as_str() {
                    Some(name)
                        if !name.is_empty()
                            && name.len() <= 255
                            && !name.chars().any(char::is_control) =>
                    {
                        if !names.iter().any(|n| n == name) {
                            names.push(name.to_owned());
                        }
                    }
                    _ => {
                        return Err(format!(
                            "{SHAPE}; each name is 1 to 255 bytes without control characters"
                        ));
                    }
                }
            }
            Ok(DatabaseSelection::List(names))
        }
        Value::Array(items) if items.len() > MAX_LIST => Err(format!(
            "`options.databases` lists at most {MAX_LIST} names"
        )),
        _ => Err(SHAPE.into()),
    }
}

fn parse_patterns(key: &str, value: &Value) -> Result<Vec<Pattern>, String> {
    let Value::Array(items) = value else {
        return Err(format!(
            "`options.{key}` must be a list of regular expressions"
        ));
    };
    if items.len() > MAX_PATTERNS {
        return Err(format!(
            "`options.{key}` lists at most {MAX_PATTERNS} patterns"
        ));
    }
    items
        .iter()
        .map(|item| {
            let Some(pattern) = item.as_str() else {
                return Err(format!(
                    "`options.{key}` must be a list of regular expressions"
                ));
            };
            if pattern.len() > MAX_PATTERN {
                return Err(format!(
                    "`options.{key}`: a pattern is at most {MAX_PATTERN} bytes"
                ));
            }
            RegexBuilder::new(&format!("^(?:{pattern})$"))
                .size_limit(PATTERN_SIZE_LIMIT)
                .dfa_size_limit(PATTERN_DFA_LIMIT)
                .build()
                .map(|regex| Pattern {
                    source: pattern.to_owned(),
                    regex,
                })
                .map_err(|e| {
                    // The error quotes the pattern back; that is the caller's own input.
                    let first = e.to_string().lines().last().unwrap_or_default().to_owned();
                    format!(
                        "`options.{key}`: {pattern:?} is not a valid regular expression ({first})"
                    )
                })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn defaults_scan_the_resource_database_fully() {
        let o = ScanOptions::parse(&json!({})).unwrap();
        assert_eq!(o.databases, DatabaseSelection::Resource);
        assert_eq!(o.depth, Depth::Everything);
        assert!(o.table_included("any", "thing"));
        assert_eq!(o.database_names("db"), Some(vec!["db".to_owned()]));
    }

    #[test]
    fn patterns_are_anchored_and_exclude_wins() {
        let o = ScanOptions::parse(&json!({
            "include_schemas": ["sales", "hr_.*"], "exclude_tables": ["tmp_.*"]
        }))
        .unwrap();
        assert!(o.schema_included("sales"));
        assert!(!o.schema_included("presales"));
        assert!(o.schema_included("hr_eu"));
        assert!(o.table_included("sales", "orders"));
        assert!(!o.table_included("sales", "tmp_x"));
        assert!(!o.table_included("other", "orders"));
    }

    #[test]
    fn options_round_trip_through_their_stored_form() {
        let given = json!({
            "databases": ["a", "b"], "depth": 2, "include_schemas": ["sales|hr"],
            "exclude_tables": ["tmp_.*"]
        });
        let options = ScanOptions::parse(&given).unwrap();
        assert_eq!(Value::from(options.clone()), given);
        let back: ScanOptions = serde_json::from_value(given).unwrap();
        assert!(back.schema_included("hr") && !back.table_included("hr", "tmp_1"));
        assert_eq!(Value::from(ScanOptions::default()), json!({}));
    }

    #[test]
    fn patterns_have_a_total_budget() {
        // The most patterns allowed, each as large as the per-pattern limits let it compile.
        let big = r"[a-z0-9_]{1,40}(?:_[a-z]{2,8}){0,4}";
        let split = |n: usize| vec![big; n];
        let fits = json!({
            "include_schemas": split(8), "exclude_schemas": split(8),
            "include_tables": split(8), "exclude_tables": split(8),
        });
        assert!(ScanOptions::parse(&fits).is_ok());
        let over = json!({ "include_schemas": split(17), "exclude_tables": split(16) });
        let err = ScanOptions::parse(&over).unwrap_err();
        assert!(err.contains("at most 32"), "{err}");
        // Unicode-class repetitions (500 MB in the wild) are refused by the compiled-size limit.
        let err = ScanOptions::parse(&json!({ "include_tables": [r"\w{200}N"] })).unwrap_err();
        assert!(err.contains("include_tables"), "{err}");
    }

    #[test]
    fn bad_values_are_refused_with_the_key_named() {
        for (options, needle) in [
            (json!({"depth": 4}), "depth"),
            (json!({"depth": "3"}), "depth"),
            (json!({"databases": "some"}), "databases"),
            (json!({"databases": []}), "databases"),
            (json!({"databases": [1]}), "databases"),
            (json!({"include_schemas": "x"}), "include_schemas"),
            (json!({"exclude_tables": ["("]}), "exclude_tables"),
            (json!({"exclude_table": []}), "exclude_table"),
            (json!([1]), "object"),
        ] {
            let e = ScanOptions::parse(&options).unwrap_err();
            assert!(e.contains(needle), "{options}: {e}");
        }
    }
}
