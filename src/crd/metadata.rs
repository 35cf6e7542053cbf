//! Kubernetes' rules for label and annotation keys and values, and the key prefixes reserved
//! for Kubernetes and for this operator: as Rust checks, and as the CEL rules the API server
//! runs at admission. Both follow `k8s.io/apimachinery/pkg/util/validation` (`IsQualifiedName`,
//! `IsValidLabelValue`, `ValidateAnnotationsSize`).

/// Longest prefix (a DNS subdomain) of a qualified name.
pub const MAX_PREFIX_LEN: usize = 253;
/// Longest name part of a qualified name, and longest label value.
pub const MAX_NAME_LEN: usize = 63;
/// Longest qualified name: prefix, `/`, name.
pub const MAX_QUALIFIED_NAME_LEN: usize = MAX_PREFIX_LEN + 1 + MAX_NAME_LEN;
/// Total size of an object's annotations, keys and values, that the API server accepts.
pub const MAX_ANNOTATIONS_SIZE: usize = 256 * 1024;

/// Domains Kubernetes reserves for itself (with their subdomains, e.g. `app.kubernetes.io`).
pub const KUBERNETES_DOMAINS: [&str; 2] = ["kubernetes.io", "k8s.io"];
/// The operator's own domain: its labels and annotations (`gebeta.app/access-token`,
/// `gebeta.app/refresh-for`, `gebeta.app/account-id`, ...) mark what it owns.
pub const OPERATOR_DOMAIN: &str = "gebeta.app";

/// CEL: every key of the map is a qualified name. The pattern checks the shape and the name's
/// length; the prefix's length is checked apart (RE2 cannot count a DNS subdomain's length).
pub const KEYS_ARE_QUALIFIED_NAMES: &str = "self.all(k, k.matches('^([a-z0-9]([-a-z0-9]*[a-z0-9])?([.][a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$') && (!k.contains('/') || k.indexOf('/') <= 253))";
/// Message of [`KEYS_ARE_QUALIFIED_NAMES`].
pub const KEYS_ARE_QUALIFIED_NAMES_MESSAGE: &str = "keys must be qualified names: an optional DNS subdomain prefix (at most 253 characters) and '/', then a name of at most 63 letters, digits, '-', '_' or '.' that starts and ends with a letter or digit";

/// CEL predicate on a key `k`: reserved, as [`reserved_key_domain`] says.
macro_rules! reserved_key {
    () => {
        "(k.matches('^([^/]*[.])?(kubernetes[.]io|k8s[.]io|gebeta[.]app)/') && (!k.startsWith('app.kubernetes.io/') || k == 'app.kubernetes.io/managed-by'))"
    };
}

/// CEL: no key is reserved (see [`reserved_key_domain`]).
pub const NO_RESERVED_KEYS: &str = concat!("self.all(k, !", reserved_key!(), ")");
/// Message of [`NO_RESERVED_KEYS`], naming a reserved key given.
pub const NO_RESERVED_KEYS_MESSAGE: &str = concat!(
    "'key ' + self.filter(k, ",
    reserved_key!(),
    ")[0] + ' is reserved: keys under kubernetes.io/, k8s.io/ and their subdomains (but for the app.kubernetes.io/ labels other than app.kubernetes.io/managed-by) belong to Kubernetes, keys under gebeta.app/ to the operator'"
);

/// CEL: the annotations' keys and values together stay within [`MAX_ANNOTATIONS_SIZE`].
pub const ANNOTATIONS_FIT: &str = "self.map(k, size(k) + size(self[k])).sum() <= 262144";
/// Message of [`ANNOTATIONS_FIT`].
pub const ANNOTATIONS_FIT_MESSAGE: &str =
    "annotations (keys and values) must not exceed 256 KiB in total";

/// RE2 pattern of a label value (OpenAPI `pattern`; the length is `maxLength`).
pub const LABEL_VALUE_PATTERN: &str = "^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$";

/// Why `key` is not a qualified name (a label or annotation key), or `None` if it is one.
pub fn qualified_name_problem(key: &str) -> Option<String> {
    let (prefix, name) = match key.split_once('/') {
        None => (None, key),
        Some((prefix, name)) => (Some(prefix), name),
    };
    if let Some(prefix) = prefix {
        if prefix.is_empty() {
            return Some("the prefix before '/' is empty".into());
        }
        if let Some(problem) = dns_subdomain_problem(prefix) {
            return Some(format!("the prefix {problem}"));
        }
    }
    if name.is_empty() {
        return Some("the name is empty".into());
    }
    if name.len() > MAX_NAME_LEN {
        return Some(format!("the name is longer than {MAX_NAME_LEN} characters"));
    }
    if !is_name(name) {
        return Some(if name.contains('/') {
            "it has more than one '/'".into()
        } else {
            "the name must consist of letters, digits, '-', '_' or '.', and start and end with a letter or digit".into()
        });
    }
    None
}

/// Why `value` is not a label value, or `None` if it is one. Never quotes the value.
pub fn label_value_problem(value: &str) -> Option<String> {
    if value.len() > MAX_NAME_LEN {
        return Some(format!("longer than {MAX_NAME_LEN} characters"));
    }
    if !value.is_empty() && !is_name(value) {
        return Some(
            "not letters, digits, '-', '_' or '.' starting and ending with a letter or digit"
                .into(),
        );
    }
    None
}

/// Why `name` is not a DNS subdomain (RFC 1123, lower case), or `None` if it is one.
pub fn dns_subdomain_problem(name: &str) -> Option<String> {
    if name.len() > MAX_PREFIX_LEN {
        return Some(format!("is longer than {MAX_PREFIX_LEN} characters"));
    }
    let label_ok = |label: &str| {
        let bytes = label.as_bytes();
        !bytes.is_empty()
            && bytes
                .iter()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
            && bytes[0] != b'-'
            && bytes[bytes.len() - 1] != b'-'
    };
    if !name.split('.').all(label_ok) {
        return Some(
            "is not a DNS subdomain (lower-case letters, digits, '-' and '.', each part starting and ending with a letter or digit)"
                .into(),
        );
    }
    None
}

/// Prefix of the recommended labels (`app.kubernetes.io/name`, `.../part-of`, ...), which
/// Kubernetes defines for users to set.
pub const RECOMMENDED_LABELS_PREFIX: &str = "app.kubernetes.io";
/// The recommended label that marks the Secrets the operator owns.
pub const MANAGED_BY_KEY: &str = "app.kubernetes.io/managed-by";

/// The reserved domain `key`'s prefix falls under, if any: `kubernetes.io`, `k8s.io` and their
/// subdomains, except the recommended `app.kubernetes.io/` labels other than
/// `app.kubernetes.io/managed-by`; and `gebeta.app` and its subdomains.
pub fn reserved_key_domain(key: &str) -> Option<&'static str> {
    let (prefix, _) = key.split_once('/')?;
    if prefix == RECOMMENDED_LABELS_PREFIX && key != MANAGED_BY_KEY {
        return None;
    }
    KUBERNETES_DOMAINS
        .into_iter()
        .chain([OPERATOR_DOMAIN])
        .find(|domain| in_domain(prefix, domain))
}

/// Whether `name` is `domain` or one of its subdomains.
pub fn in_domain(name: &str, domain: &str) -> bool {
    name == domain
        || name
            .strip_suffix(domain)
            .is_some_and(|rest| rest.ends_with('.'))
}

/// `text` for a message: quoted, and cut short when long (keys come from users).
pub fn quoted(text: &str) -> String {
    const LIMIT: usize = 80;
    match text.char_indices().nth(LIMIT) {
        None => format!("{text:?}"),
        Some((cut, _)) => format!("{:?}...", &text[..cut]),
    }
}

/// The name part of a qualified name, and a non-empty label value: letters, digits, `-`, `_`
/// and `.`, starting and ending with a letter or digit.
fn is_name(text: &str) -> bool {
    let bytes = text.as_bytes();
    !bytes.is_empty()
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && bytes[0].is_ascii_alphanumeric()
        && bytes[bytes.len() - 1].is_ascii_alphanumeric()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qualified_names_follow_kubernetes() {
        for good in [
            "app",
            "a",
            "A_b.c-D",
            "example.com/team",
            "a.b-c.d/x",
            "x/Y",
            &"n".repeat(63),
            &format!(
                "{}/n",
                [
                    "a".repeat(63),
                    "b".repeat(63),
                    "c".repeat(63),
                    "d".repeat(61)
                ]
                .join(".")
            ),
        ] {
            assert_eq!(qualified_name_problem(good), None, "{good:?}");
        }
        for bad in [
            "",
            "/",
            "/name",
            "example.com/",
            "a/b/c",
            "-app",
            "app-",
            "app name",
            "Example.com/x",
            "exa_mple.com/x",
            "example..com/x",
            "-example.com/x",
            "ünï",
            &"n".repeat(64),
            &format!("{}/n", "a".repeat(254)),
        ] {
            assert!(qualified_name_problem(bad).is_some(), "{bad:?}");
        }
    }

    #[test]
    fn label_values_follow_kubernetes() {
        for good in ["", "v", "v1.2_3-x", &"v".repeat(63)] {
            assert_eq!(label_value_problem(good), None, "{good:?}");
        }
        for bad in ["-v", "v.", "a b", "a/b", &"v".repeat(64)] {
            assert!(label_value_problem(bad).is_some(), "{bad:?}");
        }
    }

    #[test]
    fn reserved_domains_include_subdomains_only() {
        assert_eq!(
            reserved_key_domain("kubernetes.io/service-account.name"),
            Some("kubernetes.io")
        );
        assert_eq!(
            reserved_key_domain("app.kubernetes.io/managed-by"),
            Some("kubernetes.io")
        );
        assert_eq!(
            reserved_key_domain("bootstrap.kubernetes.io/x"),
            Some("kubernetes.io")
        );
        assert_eq!(reserved_key_domain("k8s.io/x"), Some("k8s.io"));
        assert_eq!(reserved_key_domain("x.k8s.io/y"), Some("k8s.io"));
        assert_eq!(
            reserved_key_domain("gebeta.app/access-token"),
            Some("gebeta.app")
        );
        assert_eq!(
            reserved_key_domain("shard.gebeta.app/x"),
            Some("gebeta.app")
        );
        for free in [
            "app.kubernetes.io/name",
            "app.kubernetes.io/part-of",
            "kubernetes.io",
            "notkubernetes.io/x",
            "kubernetes.io.example.com/x",
            "example.com/kubernetes.io",
            "mygebeta.app/x",
            "team",
        ] {
            assert_eq!(reserved_key_domain(free), None, "{free:?}");
        }
    }

    #[test]
    fn long_text_is_cut_in_messages() {
        assert_eq!(quoted("a b"), "\"a b\"");
        let long = quoted(&"k".repeat(1000));
        assert!(long.len() < 100 && long.ends_with("..."), "{long}");
    }
}
