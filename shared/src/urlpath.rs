//! URL paths built from rules and facade calls must stay where the service's base URL puts
//! them. URL parsing (WHATWG, as the `url` crate and every browser do it) removes `.` and `..`
//! segments — also when written `%2e`, `.%2E` and the like — so a path segment made of dots
//! climbs out of the base path whatever its encoding. Such paths are refused instead of sent.

/// The first segment of `path` (before any `?query`) that URL parsing would treat as `.` or
/// `..`, in any of its spellings. Backslashes separate segments too: http(s) URLs treat them as
/// slashes.
pub fn dot_segment(path: &str) -> Option<&str> {
    let path = path.split(['?', '#']).next().unwrap_or_default();
    path.split(['/', '\\'])
        .find(|segment| is_dot_segment(segment))
}

/// `.` or `..`, each dot possibly spelled `%2e` or `%2E`. Read in place: every path of every
/// delivery is checked, and copying each segment to lower case was two allocations apiece.
fn is_dot_segment(segment: &str) -> bool {
    let mut rest = segment.as_bytes();
    let mut dots = 0;
    while !rest.is_empty() {
        if let Some(after) = rest.strip_prefix(b".") {
            rest = after;
        } else if rest
            .get(..3)
            .is_some_and(|dot| dot.eq_ignore_ascii_case(b"%2e"))
        {
            rest = &rest[3..];
        } else {
            return false;
        }
        dots += 1;
        if dots > 2 {
            return false;
        }
    }
    dots > 0
}

/// Why `path` is refused, naming the setting or field it came from; `None` when it is fine.
pub fn refusal(path: &str) -> Option<String> {
    dot_segment(path).map(|segment| {
        format!(
            "the path has a `{segment}` segment, which would move the request out of its place \
             under the service's base URL; `.` and `..` segments (also percent-encoded) are not \
             allowed in paths"
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_spelling_of_a_dot_segment_is_found() {
        for path in [
            "/courses/../enrol",
            "..",
            "../admin",
            "/a/./b",
            "%2e%2e/%2e%2e/pct",
            "/a/.%2E/b",
            "/a/%2E./b",
            "/a/%2e/b",
            "/a\\..\\b",
            "/a/..?x=1",
        ] {
            assert!(dot_segment(path).is_some(), "{path}");
        }
        for path in [
            "/courses/12/enrol",
            "/files/..txt",
            "/a/.../b",
            "/a/%252e%252e/b",
            "/a/%2e%2e%2e/b",
            "/a/%2e.%2E/b",
            "/a/%2/b",
            "/a/.%2/b",
            "/a/%2f/b",
            "/a/b?c=../d",
            "",
            "/",
        ] {
            assert_eq!(dot_segment(path), None, "{path}");
        }
    }
}
