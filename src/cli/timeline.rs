//! `kubectl gebeta timeline`: for the next hours, when each access token expires and when its
//! refresh is planned, one row per token on a common time axis, so bunched refreshes and
//! tokens without margin stand out.
//!
//! In a row, `-` is time the current token is valid, `R` the planned refresh
//! (`status.nextRefreshTime`), `X` the expiry (`status.expiresAt`) and `!` trouble: an expired
//! token, or an expiry with no refresh planned before it (missing, later, or in the same
//! column). `>` means the token is still valid at the end of the window. The last row counts
//! the refreshes planned in each column.

use jiff::{SignedDuration, Timestamp};

use super::{
    CliError, Kube,
    output::{Colors, Format, Style},
    time,
    view::{self, Kind, Row},
};

/// `timeline` flags.
#[derive(clap::Args, Debug, Clone)]
pub struct TimelineArgs {
    /// Tokens of every namespace.
    #[arg(short = 'A', long = "all-namespaces")]
    pub all_namespaces: bool,
    /// How many hours ahead to show.
    #[arg(long, default_value_t = 6, value_name = "HOURS", value_parser = clap::value_parser!(u32).range(1..=168))]
    pub hours: u32,
    /// Columns of the time axis.
    #[arg(long, default_value_t = 60, value_name = "COLUMNS", value_parser = clap::value_parser!(u16).range(12..=400))]
    pub width: u16,
}

pub async fn run(kube: &Kube, args: &TimelineArgs) -> Result<(), CliError> {
    let ns = (!args.all_namespaces).then_some(kube.namespace.as_str());
    let (_, tokens) = kube.list_objects(ns).await?;
    let now = Timestamp::now();
    let rows = view::rows(&[], &tokens, now);
    if rows.is_empty() {
        let where_ = ns.map_or("any namespace".to_string(), |ns| format!("namespace {ns}"));
        eprintln!("No GebetaAccessTokens found in {where_}.");
        return Ok(());
    }
    let colors = Colors::for_stdout(Format::Table);
    print!(
        "{}",
        render(&rows, now, args.hours, usize::from(args.width), colors)
    );
    Ok(())
}

/// The axis: `width` columns covering `hours` from `now`.
struct Axis {
    now: Timestamp,
    width: usize,
    seconds_per_column: f64,
}

impl Axis {
    /// The column of `t`: negative before `now`, `>= width` after the window.
    fn column(&self, t: Timestamp) -> i64 {
        let secs = t.duration_since(self.now).as_secs_f64();
        (secs / self.seconds_per_column).floor() as i64
    }

    fn in_window(&self, column: i64) -> Option<usize> {
        usize::try_from(column).ok().filter(|c| *c < self.width)
    }
}

/// The whole picture: a header with hour marks, one row per token, the refresh counts.
pub fn render(rows: &[Row], now: Timestamp, hours: u32, width: usize, colors: Colors) -> String {
    let axis = Axis {
        now,
        width,
        seconds_per_column: f64::from(hours) * 3600.0 / width as f64,
    };
    let tokens: Vec<&Row> = rows
        .iter()
        .filter(|r| r.kind == Kind::AccessToken)
        .collect();
    let label_width = tokens
        .iter()
        .map(|r| r.qualified_name().chars().count())
        .chain(["refreshes".len()])
        .max()
        .unwrap_or(0);
    let pad = |text: &str| format!("{text:<label_width$}  ");

    let mut out = String::new();
    out.push_str(&pad(""));
    out.push_str(&hour_labels(&axis, hours));
    out.push('\n');
    out.push_str(&pad(""));
    out.push_str(&ruler(&axis, hours));
    out.push('\n');
    let mut refreshes = vec![0usize; width];
    for row in &tokens {
        let cells = row_cells(row, &axis);
        if let Some(c) = row
            .next_refresh
            .and_then(|t| axis.in_window(axis.column(t).max(0)))
        {
            refreshes[c] += 1;
        }
        out.push_str(&pad(&row.qualified_name()));
        for ch in &cells {
            let style = match ch {
                'R' => Style::Green,
                'X' => Style::Yellow,
                '!' => Style::Red,
                _ => Style::Plain,
            };
            out.push_str(&colors.paint(style, &ch.to_string()));
        }
        out.push_str("  ");
        out.push_str(&note(row, now));
        out.push('\n');
    }
    out.push_str(&pad("refreshes"));
    let counts: String = refreshes
        .iter()
        .map(|n| match n {
            0 => ' ',
            1..=9 => char::from_digit(*n as u32, 10).unwrap_or('+'),
            _ => '+',
        })
        .collect();
    out.push_str(counts.trim_end());
    out.push('\n');
    out
}

/// `now`, `+1h`, `+2h`... above their columns, as many as fit.
fn hour_labels(axis: &Axis, hours: u32) -> String {
    let mut line: Vec<char> = vec![' '; axis.width + 4];
    let step = label_step(axis, hours);
    let mut free_from = 0;
    for h in (0..=hours).step_by(step as usize) {
        let t = axis.now + SignedDuration::from_hours(i64::from(h));
        let col = (axis.column(t).max(0) as usize).min(axis.width);
        let label = if h == 0 {
            "now".to_string()
        } else {
            format!("+{h}h")
        };
        if col < free_from || col + label.len() > line.len() {
            continue;
        }
        for (i, ch) in label.chars().enumerate() {
            line[col + i] = ch;
        }
        free_from = col + label.len() + 1;
    }
    line.into_iter().collect::<String>().trim_end().to_string()
}

/// Hours between two labels, so that labels do not touch.
fn label_step(axis: &Axis, hours: u32) -> u32 {
    let columns_per_hour = axis.width as f64 / f64::from(hours);
    (1..=hours)
        .find(|step| f64::from(*step) * columns_per_hour >= 5.0)
        .unwrap_or(hours)
}

/// `+` at each labelled hour, `-` between.
fn ruler(axis: &Axis, hours: u32) -> String {
    let mut line = vec!['-'; axis.width];
    let step = label_step(axis, hours);
    for h in (0..=hours).step_by(step as usize) {
        let t = axis.now + SignedDuration::from_hours(i64::from(h));
        if let Some(c) = axis.in_window(axis.column(t)) {
            line[c] = '+';
        }
    }
    line.into_iter().collect()
}

/// The axis cells of one token.
fn row_cells(row: &Row, axis: &Axis) -> Vec<char> {
    let mut cells = vec![' '; axis.width];
    let Some(expires_at) = row.expires_at else {
        return cells;
    };
    let x = axis.column(expires_at);
    if x <= 0 {
        cells[0] = '!';
        return cells;
    }
    let valid_until = usize::try_from(x).unwrap_or(usize::MAX).min(axis.width);
    for c in cells.iter_mut().take(valid_until) {
        *c = '-';
    }
    let refresh = row.next_refresh.map(|t| axis.column(t).max(0));
    if let Some(r) = refresh.and_then(|r| axis.in_window(r)) {
        cells[r] = 'R';
    }
    let trouble = !row_is_suspended(row) && refresh.is_none_or(|r| r >= x);
    match axis.in_window(x) {
        Some(c) => cells[c] = if trouble { '!' } else { 'X' },
        None => {
            let last = axis.width - 1;
            if cells[last] == '-' {
                cells[last] = '>';
            }
        }
    }
    cells
}

fn row_is_suspended(row: &Row) -> bool {
    row.state == "SUSPENDED"
}

/// The words after a row: when the refresh and the expiry are, and what is wrong.
pub fn note(row: &Row, now: Timestamp) -> String {
    let Some(expires_at) = row.expires_at else {
        return match row.reason() {
            Some(reason) => format!("no token ({reason})"),
            None => "no token".into(),
        };
    };
    let expiry = time::expiry(Some(expires_at), now);
    if row_is_suspended(row) {
        return format!("suspended; X {expiry}");
    }
    match row.next_refresh {
        None => format!("X {expiry}; no refresh planned!"),
        Some(r) if r >= expires_at => format!(
            "R {}, X {expiry}: refresh after expiry!",
            time::due(Some(r), now)
        ),
        Some(r) => format!("R {}, X {expiry}", time::due(Some(r), now)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::view::tests::{at, gat, ready};
    use serde_json::json;

    fn rows(now: Timestamp) -> Vec<Row> {
        let tokens = [
            gat(
                "a",
                json!({"expiresAt": "2026-11-28T06:00:00Z", "nextRefreshTime": "2026-11-28T05:40:00Z",
                            "conditions": ready(true, "Ready")}),
            ),
            gat(
                "late",
                json!({"expiresAt": "2026-11-28T07:00:00Z", "nextRefreshTime": "2026-11-28T07:30:00Z",
                               "conditions": ready(true, "Ready")}),
            ),
            gat(
                "long",
                json!({"expiresAt": "2026-11-28T20:00:00Z", "nextRefreshTime": "2026-11-28T05:40:00Z",
                               "conditions": ready(true, "Ready")}),
            ),
            gat(
                "gone",
                json!({"expiresAt": "2026-11-28T04:50:00Z", "conditions": ready(false, "TokenExpired")}),
            ),
            gat("new", json!({"conditions": ready(false, "Pending")})),
        ];
        view::rows(&[], &tokens, now)
    }

    #[test]
    fn rows_show_refresh_expiry_and_trouble() {
        let now = at("2026-11-28T05:00:00Z");
        let text = render(&rows(now), now, 3, 36, Colors(false));
        let expected = [
            "           now         +1h         +2h         +3h",
            "           +-----------+-----------+-----------",
            "team/gone  !                                     X expired 10m ago; no refresh planned!",
            "team/a     --------R---X                         R in 40m, X in 1h",
            "team/late  ------------------------!     R       R in 2h30m, X in 2h: refresh after expiry!",
            "team/long  --------R-------------------------->  R in 40m, X in 15h",
            "team/new                                         no token (Pending)",
            "refreshes          2                     1",
        ];
        assert_eq!(text.lines().collect::<Vec<_>>(), expected, "{text}");
        let coloured = render(&rows(now), now, 3, 36, Colors(true));
        assert!(coloured.contains("\x1b[32mR\x1b[0m"));
        assert!(coloured.contains("\x1b[31m!\x1b[0m"));
    }

    #[test]
    fn a_refresh_in_the_expiry_column_has_no_margin() {
        let now = at("2026-11-28T05:00:00Z");
        // 5 minutes a column: the refresh and the expiry fall in column 11.
        let tight = gat(
            "tight",
            json!({"expiresAt": "2026-11-28T05:59:00Z", "nextRefreshTime": "2026-11-28T05:56:00Z"}),
        );
        let row = Row::from_access_token(&tight, now);
        let text = render(&[row], now, 3, 36, Colors(false));
        assert!(text.contains("team/tight  -----------!      "), "{text}");
    }

    #[test]
    fn hour_labels_thin_out_on_long_windows() {
        let now = at("2026-11-28T05:00:00Z");
        let axis = Axis {
            now,
            width: 48,
            seconds_per_column: 24.0 * 3600.0 / 48.0,
        };
        assert_eq!(label_step(&axis, 24), 3);
        assert_eq!(
            hour_labels(&axis, 24),
            "now   +3h   +6h   +9h   +12h  +15h  +18h  +21h  +24h"
        );
    }
}
