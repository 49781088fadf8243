//! What commands print: aligned tables for people, the server's JSON for scripts, and progress
//! bars on a terminal only (stderr; never in a pipe or a file).

use std::io::{IsTerminal, Write};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressState, ProgressStyle};
use serde_json::Value;

use super::failure::Failure;

/// Writes to stdout. A closed pipe (`depot consume ... | head -1`) is a failure, not a panic:
/// a consumer must not ack what nobody read.
pub fn out(text: &str) -> Result<(), Failure> {
    out_bytes(text.as_bytes())
}

pub fn out_bytes(bytes: &[u8]) -> Result<(), Failure> {
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(bytes).and_then(|()| stdout.flush()).map_err(|e| match e.kind() {
        std::io::ErrorKind::BrokenPipe => Failure::other("stdout was closed"),
        _ => Failure::other(format!("writing to stdout: {e}")),
    })
}

pub fn json(value: &Value) -> Result<(), Failure> {
    let text = serde_json::to_string_pretty(value).map_err(|e| Failure::other(e.to_string()))?;
    out(&format!("{text}\n"))
}

/// A table with a header row; cells are padded to the widest in their column.
pub struct Table {
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(header: &[&str]) -> Table {
        Table { rows: vec![header.iter().map(|h| (*h).to_owned()).collect()] }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub fn render(&self) -> String {
        let columns = self.rows.iter().map(Vec::len).max().unwrap_or(0);
        let width = |c: usize| self.rows.iter().map(|r| r.get(c).map_or(0, |s| s.chars().count())).max().unwrap_or(0);
        let widths: Vec<usize> = (0..columns).map(width).collect();
        let mut text = String::new();
        for row in &self.rows {
            let mut line = String::new();
            for (c, cell) in row.iter().enumerate() {
                // Control characters from the server never reach the terminal as such.
                let cell: String = cell.chars().map(|ch| if ch.is_control() { '?' } else { ch }).collect();
                if c + 1 == row.len() {
                    line.push_str(&cell);
                } else {
                    line.push_str(&format!("{cell:<w$}  ", w = widths[c]));
                }
            }
            text.push_str(line.trim_end());
            text.push('\n');
        }
        text
    }

    pub fn print(&self) -> Result<(), Failure> {
        out(&self.render())
    }
}

/// One column of a list's table: its header, and how an item gives its cell.
pub struct Column<'a> {
    header: &'a str,
    cell: Cell<'a>,
}

enum Cell<'a> {
    /// A field by its dotted path (`push.state`), shown by [`cell`].
    Field(&'a str),
    /// Computed from the whole item (a count, a joined list).
    With(&'a dyn Fn(&Value) -> String),
}

/// A column showing the field at a dotted path of each item (`"push.state"`).
pub fn col<'a>(header: &'a str, path: &'a str) -> Column<'a> {
    Column { header, cell: Cell::Field(path) }
}

/// A column computed from each item.
pub fn col_with<'a>(header: &'a str, f: &'a dyn Fn(&Value) -> String) -> Column<'a> {
    Column { header, cell: Cell::With(f) }
}

/// The value at a dotted path of `item`; `Null` when any step is missing.
fn at<'v>(item: &'v Value, path: &str) -> &'v Value {
    path.split('.').fold(item, |v, key| &v[key])
}

/// A table of `items` (a JSON array; anything else is no rows), one row per item, so every
/// list command lays out its columns the same way.
pub fn table(items: &Value, columns: &[Column]) -> Table {
    let headers: Vec<&str> = columns.iter().map(|c| c.header).collect();
    let mut table = Table::new(&headers);
    for item in items.as_array().into_iter().flatten() {
        table.row(
            columns
                .iter()
                .map(|c| match &c.cell {
                    Cell::Field(path) => cell(at(item, path)),
                    Cell::With(f) => f(item),
                })
                .collect(),
        );
    }
    table
}

/// What a list command prints: the server's JSON with `--json`, else the table of the array
/// under `key`.
pub fn list(json: bool, answer: &Value, key: &str, columns: &[Column]) -> Result<(), Failure> {
    if json {
        return self::json(answer);
    }
    table(&answer[key], columns).print()
}

/// A JSON value as a table cell: strings bare, absent values `-`, others as JSON.
pub fn cell(value: &Value) -> String {
    match value {
        Value::Null => "-".to_owned(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Field-per-line view of one object, for `get` commands: `key  value`, nested objects flattened
/// with dots.
pub fn details(value: &Value) -> Result<(), Failure> {
    let mut table = Table { rows: Vec::new() };
    flatten("", value, &mut table);
    table.print()
}

fn flatten(prefix: &str, value: &Value, table: &mut Table) {
    match value {
        Value::Object(map) if !map.is_empty() => {
            for (key, v) in map {
                let name = if prefix.is_empty() { key.clone() } else { format!("{prefix}.{key}") };
                flatten(&name, v, table);
            }
        }
        other => table.rows.push(vec![prefix.to_owned(), cell(other)]),
    }
}

/// A progress bar on stderr when it is a terminal; hidden otherwise. `total` is the count of
/// items (or bytes, with `bytes`) when known, else a spinner with the rate.
pub fn progress(total: Option<u64>, what: &str, bytes: bool) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = match total {
        Some(total) => ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr()),
        None => ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr()),
    };
    let template = match (total.is_some(), bytes) {
        (true, true) => format!("{{bar:30}} {{bytes}}/{{total_bytes}} {what}  {{bytes_per_sec}}  ETA {{eta}}"),
        (true, false) => format!("{{bar:30}} {{pos}}/{{len}} {what}  {{rate}}  ETA {{eta}}"),
        (false, _) => format!("{{spinner}} {{pos}} {what}  {{rate}}  {{elapsed}}"),
    };
    if let Ok(style) = ProgressStyle::with_template(&template) {
        // Whole items per second: indicatif's own {per_sec} shows four decimals.
        let rate = |state: &ProgressState, w: &mut dyn std::fmt::Write| {
            let _ = write!(w, "{:.0}/s", state.per_sec());
        };
        bar.set_style(style.with_key("rate", rate));
    }
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_columns_and_defuse_control_characters() {
        let mut t = Table::new(&["NAME", "MESSAGES"]);
        t.row(vec!["orders".to_owned(), "12".to_owned()]);
        t.row(vec!["a\u{1b}[31m".to_owned(), "3".to_owned()]);
        assert_eq!(t.render(), "NAME    MESSAGES\norders  12\na?[31m  3\n");
        assert_eq!(cell(&Value::Null), "-");
        assert_eq!(cell(&serde_json::json!(5)), "5");
    }

    #[test]
    fn list_tables_take_dotted_fields_and_computed_columns() {
        let items = serde_json::json!([
            {"name": "a", "push": {"state": "active"}, "tags": [1, 2]},
            {"name": "bb", "push": null},
        ]);
        let count = |item: &Value| item["tags"].as_array().map_or(0, Vec::len).to_string();
        let t = table(&items, &[col("NAME", "name"), col("PUSH", "push.state"), col_with("TAGS", &count)]);
        assert_eq!(t.render(), "NAME  PUSH    TAGS\na     active  2\nbb    -       0\n");
        assert_eq!(table(&Value::Null, &[col("NAME", "name")]).render(), "NAME\n");
    }
}
