//! A small CSV reader for previews: the first rows of a file's first bytes, quoted fields
//! (with `""` for a quote, and commas and line breaks inside) handled, nothing else assumed.
//! Previews only: a full reader (types, dialects) belongs with the plugins that read datasets.

/// The head of a CSV file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Preview {
    /// The first record, taken as the header.
    pub(crate) header: Vec<String>,
    /// The records after it, at most as many as asked for.
    pub(crate) rows: Vec<Vec<String>>,
    /// Whether the file goes on after the rows shown.
    pub(crate) more: bool,
}

/// Reads the header and up to `max_rows` rows from `text`, the first bytes of a file;
/// `complete` says whether `text` is the whole file. When it is not, a last record without
/// its line break may have been cut, so it is left out.
pub(crate) fn preview(text: &str, complete: bool, max_rows: usize) -> Preview {
    // One record more than shown tells whether more follow.
    let wanted = max_rows.saturating_add(2);
    let mut records: Vec<Vec<String>> = Vec::new();
    let mut record: Vec<String> = Vec::new();
    let mut field = String::new();
    let mut quoted = false;
    let mut chars = text.chars().peekable();
    let mut pending = false;
    while let Some(c) = chars.next() {
        pending = true;
        if quoted {
            match c {
                '"' if chars.peek() == Some(&'"') => {
                    chars.next();
                    field.push('"');
                }
                '"' => quoted = false,
                _ => field.push(c),
            }
            continue;
        }
        match c {
            // A quote opens a quoted field only at its start; elsewhere it is text.
            '"' if field.is_empty() => quoted = true,
            ',' => record.push(std::mem::take(&mut field)),
            '\r' if chars.peek() == Some(&'\n') => {}
            '\n' | '\r' => {
                end_record(&mut records, &mut record, &mut field);
                pending = false;
            }
            _ => field.push(c),
        }
        if records.len() >= wanted {
            break;
        }
    }
    let cut = !complete || records.len() >= wanted;
    if pending && !cut {
        end_record(&mut records, &mut record, &mut field);
    }
    let mut records = records.into_iter();
    let header = records.next().unwrap_or_default();
    let rest: Vec<Vec<String>> = records.collect();
    let more = cut || rest.len() > max_rows;
    Preview {
        header,
        rows: rest.into_iter().take(max_rows).collect(),
        more,
    }
}

/// Ends the record being read with the field being read.
fn end_record(records: &mut Vec<Vec<String>>, record: &mut Vec<String>, field: &mut String) {
    record.push(std::mem::take(field));
    let done = std::mem::take(record);
    // Blank lines are not records.
    if done.len() > 1 || done.first().is_some_and(|only| !only.is_empty()) {
        records.push(done);
    }
}

#[cfg(test)]
mod tests {
    use expect_test::{Expect, expect};

    use super::preview;

    fn check(text: &str, complete: bool, max_rows: usize, expected: Expect) {
        let result = preview(text, complete, max_rows);
        let mut lines = vec![format!("header: {:?}", result.header)];
        lines.extend(result.rows.iter().map(|row| format!("row: {row:?}")));
        lines.push(format!("more: {}", result.more));
        expected.assert_eq(&lines.join("\n"));
    }

    #[test]
    fn quoted_fields_keep_commas_quotes_and_line_breaks() {
        check(
            "name,note\r\n\"Smith, J\",\"said \"\"hi\"\"\"\n\"two\nlines\",x\n\nlast,row",
            true,
            20,
            expect![[r#"
                header: ["name", "note"]
                row: ["Smith, J", "said \"hi\""]
                row: ["two\nlines", "x"]
                row: ["last", "row"]
                more: false"#]],
        );
    }

    #[test]
    fn a_cut_file_drops_its_unfinished_last_record() {
        check(
            "a,b\n1,2\n3,\"unfinished",
            false,
            20,
            expect![[r#"
                header: ["a", "b"]
                row: ["1", "2"]
                more: true"#]],
        );
    }

    #[test]
    fn rows_beyond_the_limit_are_counted_not_shown() {
        check(
            "a\n1\n2\n3\n",
            true,
            2,
            expect![[r#"
                header: ["a"]
                row: ["1"]
                row: ["2"]
                more: true"#]],
        );
        check(
            "a\n1\n2\n",
            true,
            2,
            expect![[r#"
                header: ["a"]
                row: ["1"]
                row: ["2"]
                more: false"#]],
        );
    }

    #[test]
    fn an_empty_file_has_no_header() {
        check(
            "",
            true,
            20,
            expect![[r#"
                header: []
                more: false"#]],
        );
    }
}
