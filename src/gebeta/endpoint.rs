//! Stable endpoint labels, shared by the client (metrics, errors, observer) and the
//! simulator (call counters, fault injection).

pub const CREATE_ACCOUNT: &str = "create_account";
pub const GET_ACCOUNT: &str = "get_account";
pub const PATCH_ACCOUNT: &str = "patch_account";
pub const DELETE_ACCOUNT: &str = "delete_account";
pub const LIST_ACCOUNTS: &str = "list_accounts";
pub const AUTH: &str = "auth";
pub const REFRESH: &str = "refresh";
/// Only served by the simulator (the data endpoint workloads call with the access token).
pub const ROUTE: &str = "route";

/// Every label, in a stable order.
pub const ALL: [&str; 8] = [
    CREATE_ACCOUNT,
    GET_ACCOUNT,
    PATCH_ACCOUNT,
    DELETE_ACCOUNT,
    LIST_ACCOUNTS,
    AUTH,
    REFRESH,
    ROUTE,
];

/// The `&'static` label equal to `name`, if it is one.
pub fn lookup(name: &str) -> Option<&'static str> {
    ALL.iter().copied().find(|e| *e == name)
}
