//! Column-aligned tables for the CLI's listings: every column as wide as its widest cell, so a
//! long DAG id, a model name or a date never pushes a row out of line.

/// Which side of its column a cell keeps to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Align {
    /// Text.
    Left,
    /// Numbers.
    Right,
}

/// A table being filled row by row, printed once whole.
#[derive(Debug)]
pub(crate) struct Table {
    columns: Vec<(&'static str, Align)>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these headers.
    pub(crate) fn new(columns: &[(&'static str, Align)]) -> Table {
        Table {
            columns: columns.to_vec(),
            rows: Vec::new(),
        }
    }

    /// Adds a row; missing cells are empty, extra ones are dropped.
    pub(crate) fn row(&mut self, mut cells: Vec<String>) {
        cells.resize(self.columns.len(), String::new());
        self.rows.push(cells);
    }

    /// The header line and every row, two spaces between columns, no trailing spaces.
    pub(crate) fn render(&self) -> String {
        let width = |index: usize| {
            self.rows
                .iter()
                .map(|row| row[index].chars().count())
                .chain([self.columns[index].0.chars().count()])
                .max()
                .unwrap_or(0)
        };
        let widths: Vec<usize> = (0..self.columns.len()).map(width).collect();
        let headers: Vec<String> = self
            .columns
            .iter()
            .map(|(name, _)| (*name).to_owned())
            .collect();
        let mut out = String::new();
        for cells in std::iter::once(&headers).chain(&self.rows) {
            let line: Vec<String> = cells
                .iter()
                .zip(&self.columns)
                .zip(&widths)
                .map(|((cell, (_, align)), width)| match align {
                    Align::Left => format!("{cell:<width$}"),
                    Align::Right => format!("{cell:>width$}"),
                })
                .collect();
            out.push_str(line.join("  ").trim_end());
            out.push('\n');
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use expect_test::expect;

    use super::{Align, Table};

    #[test]
    fn columns_grow_to_their_widest_cell() {
        let mut table = Table::new(&[
            ("RUN", Align::Right),
            ("DAG", Align::Left),
            ("ENDED", Align::Left),
        ]);
        table.row(vec![
            "7".into(),
            "a_very_long_dag_identifier".into(),
            "-".into(),
        ]);
        table.row(vec![
            "1234".into(),
            "hello".into(),
            "2026-12-04T21:00:00Z".into(),
        ]);
        table.row(vec!["9".into()]);
        expect![[r#"
             RUN  DAG                         ENDED
               7  a_very_long_dag_identifier  -
            1234  hello                       2026-12-04T21:00:00Z
               9
        "#]]
        .assert_eq(&table.render());
    }
}
