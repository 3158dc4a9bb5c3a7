//! What a resource asks a scan to read: which databases, which schemas and tables, and how
//! deep. Parsed from the resource's `options` JSON by the API (to reject bad values with a
//! 422) and by the worker (to scan), with the same parser, so they never disagree.
//!
//! The filter patterns are compiled apart from parsing: [`ScanOptions::parse`] (a client's
//! input) compiles them once to check them; reading stored options back does not compile
//! anything; a worker compiles them into [`Filters`] when it scans, once per resource version
//! (its cache keeps them while the patterns stay the same).

use regex_automata::MatchKind;
use regex_automata::meta::{self, Regex};
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
/// keys that differ from the defaults. Reading it back (deserializing) checks its shape and
/// limits again but does not compile the patterns: they were compiled when the options were
/// written, and are compiled again only where they are matched ([`ScanOptions::compile`]).
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

/// A name pattern as the client wrote it (at most [`MAX_PATTERN`] bytes); [`Filters`] holds
/// its compiled form.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Pattern {
    source: String,
}

impl Pattern {
    /// The pattern as the client wrote it.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// The anchored, compiled form, under the per-pattern limits. `key` names the list in
    /// the error.
    fn compile(&self, key: &str) -> Result<Regex, String> {
        let config = meta::Config::new()
            // As `regex::Regex`: leftmost-first, no empty matches inside a UTF-8 character.
            .match_kind(MatchKind::LeftmostFirst)
            .utf8_empty(true)
            .nfa_size_limit(Some(PATTERN_SIZE_LIMIT))
            .onepass_size_limit(Some(PATTERN_SIZE_LIMIT))
            .dfa_size_limit(Some(PATTERN_SIZE_LIMIT))
            .hybrid_cache_capacity(PATTERN_DFA_LIMIT);
        meta::Builder::new()
            .configure(config)
            .build(&format!("^(?:{})$", self.source))
            .map_err(|e| {
                let why = match (e.size_limit(), e.syntax_error()) {
                    (Some(limit), _) => {
                        format!("it compiles to more than the limit of {limit} bytes")
                    }
                    // The last line says what is wrong; the ones before quote the pattern.
                    (None, Some(syntax)) => syntax
                        .to_string()
                        .lines()
                        .last()
                        .unwrap_or_default()
                        .to_owned(),
                    (None, None) => e.to_string(),
                };
                // The error quotes the pattern back; that is the caller's own input.
                format!(
                    "`options.{key}`: {:?} is not a valid regular expression ({why})",
                    self.source
                )
            })
    }
}

impl TryFrom<Value> for ScanOptions {
    type Error = String;

    /// Stored options: their shape and limits are checked, the patterns are not compiled.
    fn try_from(value: Value) -> Result<Self, String> {
        Self::read(&value)
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
/// Lazy-DFA cache bound per pattern (`hybrid_cache_capacity`), the memory matching may grow
/// to.
const PATTERN_DFA_LIMIT: usize = 64 * 1024;
// Each of a pattern's compiled parts (forward and reverse NFA, one-pass DFA, full DFA) is held
// under PATTERN_SIZE_LIMIT, and matching under PATTERN_DFA_LIMIT, so the worst options a
// resource may hold compile to a few MiB, once in the API when written and once per version
// in a worker ([`Filters::memory_usage`] says how much exactly).

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
                    "description": "`resource` (the default: the resource's `database`), `all`, or a list of database names.",
                    "oneOf": [
                        { "type": "string", "enum": ["resource", "all"] },
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
    /// Parses a resource's `options` as a client sent them, compiling every pattern once to
    /// check it. The error says which key is wrong and why.
    pub fn parse(options: &Value) -> Result<Self, String> {
        let parsed = Self::read(options)?;
        parsed.compile()?;
        Ok(parsed)
    }

    /// These options with `patch` applied key by key, as `PATCH` does: a key given replaces
    /// that key (a pattern list whole), a key left out keeps its value. `null` (not an object)
    /// means the defaults. The result is parsed and compiled as a client's options are.
    pub fn patched(&self, patch: &Value) -> Result<Self, String> {
        let Value::Object(given) = patch else {
            return Self::parse(patch);
        };
        let mut merged = match Value::from(self.clone()) {
            Value::Object(current) => current,
            _ => serde_json::Map::new(),
        };
        merged.extend(
            given
                .iter()
                .map(|(key, value)| (key.clone(), value.clone())),
        );
        Self::parse(&Value::Object(merged))
    }

    /// Parses options without compiling the patterns (stored options, checked when written;
    /// [`ScanOptions::compile`] reports a bad pattern where it is used).
    fn read(options: &Value) -> Result<Self, String> {
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

    /// Whether `databases` selects `name`, given the resource's own database (what
    /// `"resource"` selects).
    pub fn selects_database(&self, name: &str, resource_database: &str) -> bool {
        match &self.databases {
            DatabaseSelection::Resource => name == resource_database,
            DatabaseSelection::All => true,
            DatabaseSelection::List(names) => names.iter().any(|n| n == name),
        }
    }

    /// The four pattern lists, in a fixed order: what [`Filters`] are compiled from.
    pub fn pattern_lists(&self) -> [&[Pattern]; 4] {
        [
            &self.include_schemas,
            &self.exclude_schemas,
            &self.include_tables,
            &self.exclude_tables,
        ]
    }

    /// Compiles the filter patterns (at most [`MAX_PATTERNS`], each under the per-pattern
    /// limits). The error names the list and the pattern.
    pub fn compile(&self) -> Result<Filters, String> {
        let list = |key: &str, patterns: &[Pattern]| -> Result<Vec<Regex>, String> {
            patterns.iter().map(|p| p.compile(key)).collect()
        };
        let compiled = Compiled {
            include_schemas: list("include_schemas", &self.include_schemas)?,
            exclude_schemas: list("exclude_schemas", &self.exclude_schemas)?,
            include_tables: list("include_tables", &self.include_tables)?,
            exclude_tables: list("exclude_tables", &self.exclude_tables)?,
        };
        let memory = compiled
            .all()
            .map(|regex| regex.memory_usage() + PATTERN_DFA_LIMIT)
            .sum();
        Ok(Filters {
            sources: self.pattern_lists().map(<[Pattern]>::to_vec),
            compiled,
            memory,
        })
    }
}

/// A resource's filter patterns, compiled: which schemas and tables a scan keeps. Made by
/// [`ScanOptions::compile`]; remembers what it was compiled from ([`Filters::compiled_from`]),
/// so a cache can tell whether it still fits a resource's options. The default keeps
/// everything (no patterns).
#[derive(Debug, Default)]
pub struct Filters {
    sources: [Vec<Pattern>; 4],
    compiled: Compiled,
    memory: usize,
}

#[derive(Debug, Default)]
struct Compiled {
    include_schemas: Vec<Regex>,
    exclude_schemas: Vec<Regex>,
    include_tables: Vec<Regex>,
    exclude_tables: Vec<Regex>,
}

impl Compiled {
    fn all(&self) -> impl Iterator<Item = &Regex> {
        self.include_schemas
            .iter()
            .chain(&self.exclude_schemas)
            .chain(&self.include_tables)
            .chain(&self.exclude_tables)
    }
}

impl Filters {
    /// Whether the schema filters keep `schema`.
    pub fn schema_included(&self, schema: &str) -> bool {
        let c = &self.compiled;
        selected(&c.include_schemas, &c.exclude_schemas, schema)
    }

    /// Whether `table` is kept: its schema must be, and then the table filters must.
    pub fn table_included(&self, schema: &str, table: &str) -> bool {
        let c = &self.compiled;
        self.schema_included(schema) && selected(&c.include_tables, &c.exclude_tables, table)
    }

    /// Whether these were compiled from exactly the patterns of `options`.
    pub fn compiled_from(&self, options: &ScanOptions) -> bool {
        self.sources
            .iter()
            .zip(options.pattern_lists())
            .all(|(mine, theirs)| mine.as_slice() == theirs)
    }

    /// Bytes these hold at most: the compiled patterns' heap memory, plus the lazy-DFA cache
    /// each may grow while matching ([`PATTERN_DFA_LIMIT`]).
    pub fn memory_usage(&self) -> usize {
        self.memory
    }
}

fn selected(include: &[Regex], exclude: &[Regex], name: &str) -> bool {
    (include.is_empty() || include.iter().any(|r| r.is_match(name)))
        && !exclude.iter().any(|r| r.is_match(name))
}

fn parse_databases(value: &Value) -> Result<DatabaseSelection, String> {
    const SHAPE: &str =
        "`options.databases` must be \"resource\", \"all\" or a non-empty list of names";
    match value {
        Value::String(s) if s == "all" => Ok(DatabaseSelection::All),
        // The default, spelled out: what a `PATCH` gives to go back to it.
        Value::String(s) if s == "resource" => Ok(DatabaseSelection::Resource),
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
            Ok(Pattern {
                source: pattern.to_owned(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_patch_replaces_the_keys_it_gives_and_keeps_the_others() {
        let current = ScanOptions::parse(&json!({
            "databases": ["a", "b"], "depth": 2, "include_schemas": ["public"]
        }))
        .unwrap();
        let patched = current.patched(&json!({ "depth": 1 })).unwrap();
        assert_eq!(
            Value::from(patched.clone()),
            json!({ "databases": ["a", "b"], "depth": 1, "include_schemas": ["public"] })
        );
        // Each default has a spelling, so a patch can go back to it.
        let reset = patched
            .patched(&json!({ "databases": "resource", "depth": 3, "include_schemas": [] }))
            .unwrap();
        assert_eq!(Value::from(reset), json!({}));
        assert!(current.patched(&json!({ "depth": null })).is_err());
        assert!(current.patched(&json!({ "colour": 1 })).is_err());
    }

    #[test]
    fn defaults_scan_the_resource_database_fully() {
        let o = ScanOptions::parse(&json!({})).unwrap();
        assert_eq!(o.databases, DatabaseSelection::Resource);
        assert_eq!(o.depth, Depth::Everything);
        assert!(o.compile().unwrap().table_included("any", "thing"));
        assert_eq!(o.database_names("db"), Some(vec!["db".to_owned()]));
    }

    #[test]
    fn patterns_are_anchored_and_exclude_wins() {
        let o = ScanOptions::parse(&json!({
            "include_schemas": ["sales", "hr_.*"], "exclude_tables": ["tmp_.*"]
        }))
        .unwrap()
        .compile()
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
        let filters = back.compile().unwrap();
        assert!(filters.schema_included("hr") && !filters.table_included("hr", "tmp_1"));
        assert!(filters.compiled_from(&options) && filters.compiled_from(&back));
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
        assert!(
            err.contains("include_tables") && err.contains("limit"),
            "{err}"
        );
    }

    #[test]
    fn stored_options_are_read_without_compiling_and_compile_where_used() {
        // A pattern that could only be in the database if written there behind the API.
        let stored = json!({ "exclude_tables": ["("] });
        let options: ScanOptions = serde_json::from_value(stored).unwrap();
        let err = options.compile().unwrap_err();
        assert!(
            err.contains("exclude_tables") && err.contains("unclosed"),
            "{err}"
        );
        // Shapes and limits are still checked on reading.
        assert!(serde_json::from_value::<ScanOptions>(json!({ "depth": 9 })).is_err());
    }

    #[test]
    fn filters_know_what_they_were_compiled_from_and_their_size() {
        let a = ScanOptions::parse(&json!({ "include_schemas": ["sales"] })).unwrap();
        let b = ScanOptions::parse(&json!({ "include_tables": ["sales"] })).unwrap();
        let filters = a.compile().unwrap();
        assert!(filters.compiled_from(&a));
        // The same pattern in another list is another filter.
        assert!(!filters.compiled_from(&b));
        assert!(!filters.compiled_from(&ScanOptions::default()));
        // One small pattern: its compiled form plus the matching cache it may grow.
        let size = filters.memory_usage();
        assert!(
            size > PATTERN_DFA_LIMIT && size < 2 * PATTERN_DFA_LIMIT,
            "{size}"
        );
        assert_eq!(ScanOptions::default().compile().unwrap().memory_usage(), 0);
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
