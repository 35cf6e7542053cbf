//! Output formats, colours and aligned tables. Pure, except [`Colors::for_stdout`].

use std::io::IsTerminal as _;

use clap::ValueEnum;

/// `-o` of `status` (and, without YAML, `audit`).
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Format {
    /// Aligned columns for people.
    #[default]
    Table,
    /// One JSON document, for scripts and CI.
    Json,
    /// One YAML document.
    Yaml,
}

/// A colour (or none) for one table cell.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Style {
    Plain,
    Red,
    Yellow,
    Green,
    Dim,
    Bold,
}

impl Style {
    fn code(self) -> Option<&'static str> {
        match self {
            Style::Plain => None,
            Style::Red => Some("31"),
            Style::Yellow => Some("33"),
            Style::Green => Some("32"),
            Style::Dim => Some("2"),
            Style::Bold => Some("1"),
        }
    }
}

/// Whether ANSI colours are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Colors(pub bool);

impl Colors {
    /// Colours only for a table on a terminal, and never when `NO_COLOR` is set to anything
    /// but the empty string (<https://no-color.org>).
    pub fn wanted(format: Format, stdout_is_terminal: bool, no_color: Option<&str>) -> Colors {
        Colors(format == Format::Table && stdout_is_terminal && no_color.is_none_or(str::is_empty))
    }

    /// [`Colors::wanted`] for this process's stdout and environment.
    pub fn for_stdout(format: Format) -> Colors {
        let no_color = std::env::var("NO_COLOR").ok();
        Colors::wanted(format, std::io::stdout().is_terminal(), no_color.as_deref())
    }

    /// `text` in `style` (unchanged without colours).
    pub fn paint(self, style: Style, text: &str) -> String {
        match (self.0, style.code()) {
            (true, Some(code)) => format!("\x1b[{code}m{text}\x1b[0m"),
            _ => text.to_string(),
        }
    }
}

/// A table cell: its text and colour.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cell {
    pub text: String,
    pub style: Style,
}

impl Cell {
    pub fn plain(text: impl Into<String>) -> Cell {
        Cell::styled(text, Style::Plain)
    }

    pub fn styled(text: impl Into<String>, style: Style) -> Cell {
        Cell {
            text: text.into(),
            style,
        }
    }
}

/// One table line: a row of cells, or a free line (e.g. a hint under the row before it) that
/// does not count for the column widths.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Line {
    Cells(Vec<Cell>),
    Note(Cell),
}

/// Columns aligned as `kubectl get` does: left-aligned, separated by at least three spaces,
/// the last column not padded. Widths count characters, and colours do not change them.
pub fn table(headers: &[&str], lines: &[Line], colors: Colors) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for line in lines {
        if let Line::Cells(cells) = line {
            for (i, cell) in cells.iter().enumerate() {
                let w = cell.text.chars().count();
                match widths.get_mut(i) {
                    Some(width) => *width = (*width).max(w),
                    None => widths.push(w),
                }
            }
        }
    }
    let render = |cells: &[Cell]| {
        let mut out = String::new();
        for (i, cell) in cells.iter().enumerate() {
            let last = i + 1 == cells.len();
            out.push_str(&colors.paint(cell.style, &cell.text));
            if !last {
                let pad = widths[i] - cell.text.chars().count() + 3;
                out.push_str(&" ".repeat(pad));
            }
        }
        // An empty last cell leaves no trailing blanks.
        let mut out = out.trim_end().to_string();
        out.push('\n');
        out
    };
    let header: Vec<Cell> = headers.iter().map(|h| Cell::plain(*h)).collect();
    let mut out = render(&header);
    for line in lines {
        match line {
            Line::Cells(cells) => out.push_str(&render(cells)),
            Line::Note(cell) => {
                out.push_str(&colors.paint(cell.style, &cell.text));
                out.push('\n');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colours_only_for_tables_on_terminals_without_no_color() {
        assert!(Colors::wanted(Format::Table, true, None).0);
        assert!(
            Colors::wanted(Format::Table, true, Some("")).0,
            "empty NO_COLOR is unset"
        );
        assert!(!Colors::wanted(Format::Table, true, Some("1")).0);
        assert!(!Colors::wanted(Format::Table, false, None).0, "a pipe");
        assert!(!Colors::wanted(Format::Json, true, None).0);
        assert!(!Colors::wanted(Format::Yaml, true, None).0);
    }

    #[test]
    fn tables_align_by_characters_whatever_the_colours() {
        let lines = vec![
            Line::Cells(vec![
                Cell::styled("gat", Style::Red),
                Cell::plain("in 41m"),
                Cell::plain("x"),
            ]),
            Line::Note(Cell::styled("      -> do something", Style::Dim)),
            Line::Cells(vec![Cell::plain("gsa"), Cell::plain("-"), Cell::plain("y")]),
        ];
        let plain = table(&["KIND", "EXPIRES", "Z"], &lines, Colors(false));
        assert_eq!(
            plain,
            "KIND   EXPIRES   Z\ngat    in 41m    x\n      -> do something\ngsa    -         y\n"
        );
        let coloured = table(&["KIND", "EXPIRES", "Z"], &lines, Colors(true));
        assert!(coloured.contains("\x1b[31mgat\x1b[0m    in 41m"));
        let stripped = coloured
            .replace("\x1b[31m", "")
            .replace("\x1b[2m", "")
            .replace("\x1b[0m", "");
        assert_eq!(stripped, plain);
    }
}
