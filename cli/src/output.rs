//! `--output table|json|yaml`: JSON and YAML print the API's own documents as they came; a
//! table picks the columns a person reads.

use clap::ValueEnum;
use serde_json::Value;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Table,
    Json,
    Yaml,
}

/// One column: its header and how to read it from an item.
pub struct Column {
    pub header: &'static str,
    pub read: fn(&Value) -> String,
}

/// Prints `value` in `format`; `table` renders `rows` (the items of `value`) with `columns`.
pub fn print(format: Format, value: &Value, rows: &[Value], columns: &[Column]) {
    match format {
        Format::Json => println!(
            "{}",
            serde_json::to_string_pretty(value).expect("JSON serializes")
        ),
        Format::Yaml => print!(
            "{}",
            serde_yaml_ng::to_string(value).expect("JSON values serialize as YAML")
        ),
        Format::Table => print_table(rows, columns),
    }
}

pub fn print_table(rows: &[Value], columns: &[Column]) {
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|row| columns.iter().map(|c| (c.read)(row)).collect())
        .collect();
    let mut widths: Vec<usize> = columns.iter().map(|c| c.header.len()).collect();
    for row in &cells {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |row: Vec<&str>| {
        let mut out = String::new();
        for (i, (cell, width)) in row.iter().zip(&widths).enumerate() {
            if i + 1 == row.len() {
                out.push_str(cell);
            } else {
                out.push_str(&format!("{cell:<width$}  "));
            }
        }
        println!("{}", out.trim_end());
    };
    line(columns.iter().map(|c| c.header).collect());
    for row in &cells {
        line(row.iter().map(String::as_str).collect());
    }
}

/// A field as text: strings bare, `null` and absent as `-`, anything else as JSON.
pub fn text(value: Option<&Value>) -> String {
    match value {
        None | Some(Value::Null) => "-".into(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    }
}

/// The field at a `/`-separated JSON pointer, as [`text`].
pub fn field(value: &Value, pointer: &str) -> String {
    text(value.pointer(pointer))
}
