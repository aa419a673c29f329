//! A small Markdown table writer and the ways numbers are shown in its cells.

use crate::measure::stats::LatencySummary;

/// A Markdown table: a header row, its rule, then rows; an empty cell is `| |`.
pub struct Table(String);

impl Table {
    /// A table with these column names.
    pub fn new(header: &[&str]) -> Self {
        let mut table = Self(String::new());
        table.row(header);
        table.0 += &"| --- ".repeat(header.len());
        table.0 += "|\n";
        table
    }

    /// Adds a row.
    pub fn row(&mut self, cells: &[&str]) {
        for cell in cells {
            self.0 += &if cell.is_empty() { "| ".into() } else { format!("| {cell} ") };
        }
        self.0 += "|\n";
    }

    /// The table's text, ending with a newline.
    pub fn end(self) -> String {
        self.0
    }
}

/// `1,234,567`: rounded, digits grouped by three.
pub fn thousands(n: f64) -> String {
    let whole = n.round() as i64;
    let digits = whole.unsigned_abs().to_string();
    let groups: Vec<&str> =
        (0..digits.len()).rev().step_by(3).map(|end| &digits[end.saturating_sub(2)..=end]).collect();
    let sign = if whole < 0 { "-" } else { "" };
    format!("{sign}{}", groups.into_iter().rev().collect::<Vec<_>>().join(","))
}

/// Bytes as `1.23 KiB`.
pub fn kib(bytes: f64) -> String {
    format!("{:.2} KiB", bytes / 1024.0)
}

/// `a / b` when both are finite and `b` is positive.
pub fn ratio(a: f64, b: f64) -> Option<f64> {
    (b > 0.0 && a.is_finite() && b.is_finite()).then(|| a / b)
}

/// A ratio as `1.03×`, or `–`.
pub fn times(r: Option<f64>) -> String {
    r.map_or_else(|| "–".into(), |r| format!("{r:.2}×"))
}

/// `p50 / p99 ms`, one decimal.
pub fn p50_p99(s: &LatencySummary) -> String {
    format!("{:.1} / {:.1} ms", s.p50_ms, s.p99_ms)
}

/// Whole milliseconds, or `never` for a wait that did not end.
pub fn ms_or_never(ms: Option<f64>) -> String {
    ms.map_or("never".into(), |ms| format!("{ms:.0} ms"))
}

/// Items joined with `, `.
pub fn list(values: impl IntoIterator<Item = String>) -> String {
    values.into_iter().collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    #[test]
    fn thousands_and_empty_cells() {
        let grouped = [0.0, 999.4, 1234.0, 100_000.0, -1_234_567.0].map(super::thousands);
        assert_eq!(grouped, ["0", "999", "1,234", "100,000", "-1,234,567"]);
        let mut table = super::Table::new(&["a", "b", "c"]);
        table.row(&["1", "", "x y"]);
        assert_eq!(table.end(), "| a | b | c |\n| --- | --- | --- |\n| 1 | | x y |\n");
    }
}
