//! Plain-text layout for people: tables with aligned columns and key/value blocks, and the
//! short forms of API values (progress bars, yes/no, absent values as `-`).

use serde_json::Value;

/// A table: a header row and rows, each column as wide as its widest cell, separated by two
/// spaces; the last column is not padded.
#[derive(Debug, Clone, Default)]
pub struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these column titles.
    pub fn new(header: &[&str]) -> Table {
        Table {
            header: header.iter().map(|h| (*h).to_owned()).collect(),
            rows: Vec::new(),
        }
    }

    /// Adds a row (missing cells are empty, extra cells are dropped).
    pub fn row(&mut self, cells: Vec<String>) {
        let mut cells = cells;
        cells.resize(self.header.len(), String::new());
        self.rows.push(cells);
    }

    /// True when no row was added.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The laid-out lines, header first.
    pub fn lines(&self) -> Vec<String> {
        let columns = self.header.len();
        let mut widths = vec![0usize; columns];
        for row in std::iter::once(&self.header).chain(&self.rows) {
            for (width, cell) in widths.iter_mut().zip(row) {
                *width = (*width).max(cell.chars().count());
            }
        }
        std::iter::once(&self.header)
            .chain(&self.rows)
            .map(|row| {
                let mut line = String::new();
                for (i, cell) in row.iter().enumerate() {
                    if i + 1 == columns {
                        line.push_str(cell);
                    } else {
                        line.push_str(cell);
                        let pad = widths[i] - cell.chars().count() + 2;
                        line.extend(std::iter::repeat_n(' ', pad));
                    }
                }
                line.trim_end().to_owned()
            })
            .collect()
    }
}

/// `key  value` lines with the values aligned.
pub fn fields(pairs: &[(&str, String)]) -> Vec<String> {
    let width = pairs
        .iter()
        .map(|(key, _)| key.chars().count())
        .max()
        .unwrap_or(0);
    pairs
        .iter()
        .map(|(key, value)| format!("{key:<width$}  {value}").trim_end().to_owned())
        .collect()
}

/// A JSON value as a cell: strings bare, `null` and absent as `-`, numbers and booleans as
/// written, anything else as compact JSON.
pub fn cell(value: &Value) -> String {
    match value {
        Value::Null => "-".to_owned(),
        Value::String(text) if text.is_empty() => "-".to_owned(),
        Value::String(text) => one_line(text),
        Value::Bool(true) => "yes".to_owned(),
        Value::Bool(false) => "no".to_owned(),
        Value::Number(n) => n.to_string(),
        other => one_line(&other.to_string()),
    }
}

/// Control characters (a scheduler's error text may hold line breaks) shown as spaces, so that
/// one value stays on one line.
pub fn one_line(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// `3/8` from a RunView's `progress`, `-` when it has none.
pub fn progress(run: &Value) -> String {
    let progress = &run["progress"];
    match (progress["completed"].as_i64(), progress["total"].as_i64()) {
        (Some(done), Some(total)) => format!("{done}/{total}"),
        (Some(done), None) => done.to_string(),
        _ => "-".to_owned(),
    }
}

/// A bar such as `[######....]` for a RunView's progress (20 characters wide), empty without
/// a total.
pub fn bar(run: &Value) -> String {
    const WIDTH: i64 = 20;
    let progress = &run["progress"];
    let (Some(done), Some(total)) = (progress["completed"].as_i64(), progress["total"].as_i64())
    else {
        return String::new();
    };
    if total <= 0 {
        return String::new();
    }
    let filled = (done.clamp(0, total) * WIDTH) / total;
    let filled = usize::try_from(filled).unwrap_or(0);
    let empty = usize::try_from(WIDTH).unwrap_or(0).saturating_sub(filled);
    format!("[{}{}]", "#".repeat(filled), ".".repeat(empty))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn columns_are_as_wide_as_their_widest_cell() {
        let mut table = Table::new(&["NAME", "STATE", "NOTE"]);
        table.row(vec!["a-long-name".into(), "done".into(), "x".into()]);
        table.row(vec!["b".into(), "cancelled".into(), String::new()]);
        assert_eq!(
            table.lines(),
            vec![
                "NAME         STATE      NOTE",
                "a-long-name  done       x",
                "b            cancelled",
            ]
        );
    }

    #[test]
    fn fields_align_their_values_and_cells_stay_on_one_line() {
        assert_eq!(
            fields(&[("state", "done".into()), ("jobId", "j-1".into())]),
            vec!["state  done", "jobId  j-1"]
        );
        assert_eq!(cell(&json!("two\nlines")), "two lines");
        assert_eq!(cell(&Value::Null), "-");
        assert_eq!(cell(&json!(false)), "no");
    }

    #[test]
    fn progress_reads_as_a_fraction_and_a_bar() {
        let run = json!({"progress": {"completed": 1, "total": 4}});
        assert_eq!(progress(&run), "1/4");
        assert_eq!(bar(&run), format!("[{}{}]", "#".repeat(5), ".".repeat(15)));
        assert_eq!(progress(&json!({"progress": null})), "-");
        assert_eq!(bar(&json!({"progress": null})), "");
    }
}
