//! `kubectl gebeta status`: accounts and tokens in one view, most urgent first, with what to do
//! about every object that is not Ready.

use jiff::Timestamp;
use serde::Serialize;

use super::{
    CliError, Kube,
    output::{self, Cell, Colors, Format, Line, Style},
    time,
    view::{self, Kind, Row},
};

/// `status` flags.
#[derive(clap::Args, Debug, Clone)]
pub struct StatusArgs {
    /// Objects of every namespace.
    #[arg(short = 'A', long = "all-namespaces")]
    pub all_namespaces: bool,
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value_t = Format::Table)]
    pub output: Format,
}

/// Lists both kinds and prints them.
pub async fn run(kube: &Kube, args: &StatusArgs) -> Result<(), CliError> {
    let ns = (!args.all_namespaces).then_some(kube.namespace.as_str());
    let (accounts, tokens) = kube.list_objects(ns).await?;
    let now = Timestamp::now();
    let rows = view::rows(&accounts, &tokens, now);
    let where_ = ns.map_or("any namespace".to_string(), |ns| format!("namespace {ns}"));
    match args.output {
        Format::Table if rows.is_empty() => {
            eprintln!("No GebetaServiceAccounts or GebetaAccessTokens found in {where_}.")
        }
        Format::Table => print!("{}", table(&rows, now, Colors::for_stdout(args.output))),
        Format::Json => println!("{}", super::to_json(&document(&rows, now))?),
        Format::Yaml => print!("{}", super::to_yaml(&document(&rows, now))?),
    }
    Ok(())
}

/// The table: one line per object, and under each object that is not Ready what to do.
pub fn table(rows: &[Row], now: Timestamp, colors: Colors) -> String {
    let mut lines = Vec::new();
    for row in rows {
        let expiry_style = match row.expires_at {
            Some(t) if t <= now => Style::Red,
            Some(t) if t.duration_since(now).as_secs() < 300 => Style::Yellow,
            _ => Style::Plain,
        };
        let ready_style = match row.ready_status() {
            "True" => Style::Green,
            "False" => Style::Red,
            _ => Style::Yellow,
        };
        let state_style = match row.state.as_str() {
            "EXPIRED" | "REVOKED" | "NO TOKEN" => Style::Red,
            "SUSPENDED" | "PENDING" => Style::Yellow,
            _ => Style::Plain,
        };
        let refresh_style = match (row.next_refresh, row.expires_at) {
            (Some(r), Some(x)) if r >= x => Style::Red,
            (Some(r), _) if r < now => Style::Yellow,
            _ => Style::Plain,
        };
        lines.push(Line::Cells(vec![
            Cell::plain(row.kind.short()),
            Cell::styled(row.qualified_name(), Style::Bold),
            Cell::styled(row.state.clone(), state_style),
            Cell::styled(row.ready_status(), ready_style),
            Cell::plain(row.reason().unwrap_or("-")),
            Cell::plain(row.short_account_ids()),
            Cell::styled(time::expiry(row.expires_at, now), expiry_style),
            Cell::styled(time::due(row.next_refresh, now), refresh_style),
            Cell::plain(time::ago(row.last_refresh, now)),
        ]));
        if let Some(todo) = row.what_to_do() {
            lines.push(Line::Note(Cell::styled(
                format!("      -> {todo}"),
                Style::Yellow,
            )));
        }
    }
    output::table(
        &[
            "KIND",
            "NAME",
            "STATE",
            "READY",
            "REASON",
            "ACCOUNT",
            "EXPIRES",
            "NEXT REFRESH",
            "LAST REFRESH",
        ],
        &lines,
        colors,
    )
}

/// `-o json` / `-o yaml`: `{"items": [...]}`, most urgent first.
#[derive(Serialize, Debug)]
pub struct Document {
    pub items: Vec<Item>,
}

/// One object in `-o json`. Times are RFC 3339; `expiresInSeconds` is negative once expired.
#[derive(Serialize, Debug)]
#[serde(rename_all = "camelCase")]
pub struct Item {
    pub kind: Kind,
    pub namespace: String,
    pub name: String,
    pub state: String,
    /// `True`, `False` or `Unknown`.
    pub ready: String,
    pub reason: Option<String>,
    pub message: Option<String>,
    pub account_ids: Vec<String>,
    pub expires_at: Option<String>,
    pub expires_in_seconds: Option<i64>,
    pub next_refresh_time: Option<String>,
    pub last_refresh_time: Option<String>,
    pub what_to_do: Option<String>,
}

pub fn document(rows: &[Row], now: Timestamp) -> Document {
    let items = rows
        .iter()
        .map(|r| Item {
            kind: r.kind,
            namespace: r.namespace.clone(),
            name: r.name.clone(),
            state: r.state.clone(),
            ready: r.ready_status().to_string(),
            reason: r.reason().map(str::to_string),
            message: r
                .ready
                .as_ref()
                .map(|c| c.message.clone())
                .filter(|m| !m.is_empty()),
            account_ids: r.account_ids.clone(),
            expires_at: r.expires_at.map(|t| t.to_string()),
            expires_in_seconds: r.expires_at.map(|t| t.duration_since(now).as_secs()),
            next_refresh_time: r.next_refresh.map(|t| t.to_string()),
            last_refresh_time: r.last_refresh.map(|t| t.to_string()),
            what_to_do: r.what_to_do(),
        })
        .collect();
    Document { items }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::view::tests::{at, gat, gsa, ready};
    use serde_json::json;

    fn sample() -> (Vec<Row>, Timestamp) {
        let now = at("2026-11-28T05:00:00Z");
        let tokens = [
            gat(
                "maps",
                json!({"expiresAt": "2026-11-28T05:41:00Z", "nextRefreshTime": "2026-11-28T05:27:00Z",
                       "lastRefreshTime": "2026-11-28T04:41:00Z", "sourceAccountIds": ["1309405e-1", "77f0c2d1-2"],
                       "conditions": ready(true, "Ready")}),
            ),
            gat(
                "old",
                json!({"expiresAt": "2026-11-28T04:57:00Z", "lastRefreshTime": "2026-11-28T03:57:00Z",
                       "conditions": ready(false, "TokenExpired")}),
            ),
        ];
        let accounts = [gsa(
            "client",
            json!({"accountId": "1309405e-1", "state": "ACTIVE", "conditions": ready(true, "Ready")}),
        )];
        (view::rows(&accounts, &tokens, now), now)
    }

    #[test]
    fn the_table_shows_countdowns_and_what_to_do() {
        let (rows, now) = sample();
        let expected = "\
KIND   NAME          STATE     READY   REASON         ACCOUNT             EXPIRES          NEXT REFRESH   LAST REFRESH
gat    team/old      EXPIRED   False   TokenExpired   -                   expired 3m ago   -              1h3m ago
      -> the token expired and no new one could be obtained: fix the cause in the message, then kubectl gebeta refresh old -n team
gat    team/maps     VALID     True    Ready          1309405e,77f0c2d1   in 41m           in 27m         19m ago
gsa    team/client   ACTIVE    True    Ready          1309405e            -                -              -
";
        assert_eq!(table(&rows, now, Colors(false)), expected);
        let coloured = table(&rows, now, Colors(true));
        assert!(
            coloured.contains("\x1b[31mexpired 3m ago\x1b[0m"),
            "{coloured}"
        );
    }

    #[test]
    fn json_items_carry_times_and_advice() {
        let (rows, now) = sample();
        let doc = serde_json::to_value(document(&rows, now)).unwrap();
        let items = doc["items"].as_array().unwrap();
        assert_eq!(items.len(), 3);
        assert_eq!(items[0]["name"], "old");
        assert_eq!(items[0]["kind"], "GebetaAccessToken");
        assert_eq!(items[0]["expiresInSeconds"], -180);
        assert_eq!(items[0]["reason"], "TokenExpired");
        assert_eq!(items[0]["message"], "TokenExpired message");
        assert!(
            items[0]["whatToDo"]
                .as_str()
                .unwrap()
                .contains("refresh old")
        );
        assert_eq!(items[1]["expiresAt"], "2026-11-28T05:41:00Z");
        assert_eq!(items[1]["nextRefreshTime"], "2026-11-28T05:27:00Z");
        assert_eq!(items[1]["whatToDo"], serde_json::Value::Null);
        assert_eq!(items[2]["kind"], "GebetaServiceAccount");
        assert_eq!(items[2]["accountIds"], json!(["1309405e-1"]));
    }
}
