//! Plain-text tables and the words used for region states.

use std::time::Duration;

pub(crate) use sluice_gateway::{RegionState, now};

/// A left-aligned text table.
#[derive(Debug, Default)]
pub(crate) struct Table {
    headers: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub(crate) fn new(headers: &[&str]) -> Self {
        Self { headers: headers.iter().map(|h| (*h).to_owned()).collect(), rows: Vec::new() }
    }

    pub(crate) fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// The table as lines, each without a trailing newline.
    pub(crate) fn lines(&self) -> Vec<String> {
        let cols = self.headers.len();
        let mut widths: Vec<usize> = self.headers.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (i, cell) in row.iter().enumerate().take(cols) {
                widths[i] = widths[i].max(cell.chars().count());
            }
        }
        let fmt_row = |cells: &[String]| {
            let mut line = String::new();
            for (i, w) in widths.iter().enumerate() {
                let cell = cells.get(i).map_or("", String::as_str);
                if i + 1 == cols {
                    line.push_str(cell);
                } else {
                    line.push_str(cell);
                    line.push_str(&" ".repeat(w - cell.chars().count() + 2));
                }
            }
            line.trim_end().to_owned()
        };
        let mut out = vec![fmt_row(&self.headers)];
        out.extend(self.rows.iter().map(|r| fmt_row(r)));
        out
    }

    pub(crate) fn render(&self) -> String {
        let mut s = self.lines().join("\n");
        s.push('\n');
        s
    }
}

/// Milliseconds with one decimal below 10 ms.
pub(crate) fn ms(d: Duration) -> String {
    let ms = d.as_secs_f64() * 1000.0;
    if ms < 10.0 { format!("{ms:.1} ms") } else { format!("{ms:.0} ms") }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aligned() {
        let mut t = Table::new(&["region", "state"]);
        t.row(vec!["ap-northeast-2".into(), "healthy".into()]);
        t.row(vec!["x".into(), "down".into()]);
        assert_eq!(t.lines(), ["region          state", "ap-northeast-2  healthy", "x               down"]);
        assert_eq!(ms(Duration::from_micros(2500)), "2.5 ms");
        assert_eq!(ms(Duration::from_millis(23)), "23 ms");
    }
}
