//! SELinux context strings as the lab sees them: `user:role:type:level`.

/// The type field of a context (`container_t` of `system_u:system_r:container_t:s0:c1,c2`);
/// empty when the text is not a context. A trailing NUL or newline (as `attr/current` has) is
/// ignored.
pub fn type_of(context: &str) -> &str {
    context
        .trim_end_matches(['\0', '\n'])
        .split(':')
        .nth(2)
        .unwrap_or("")
}

/// Whether `text` has the shape of a full context: user, role, type and a level, none empty.
pub fn is_full(text: &str) -> bool {
    let mut fields = text.splitn(4, ':');
    let parts: Vec<&str> = fields.by_ref().collect();
    parts.len() == 4 && parts.iter().all(|p| !p.is_empty())
}

/// Whether `text` is a bare SELinux type name (`unconfined_t`).
pub fn is_type(text: &str) -> bool {
    !text.is_empty()
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
}

/// Whether the observed `context` is what `want` says: the whole context when `want` is one,
/// the type field when `want` is a bare type.
pub fn matches(want: &str, context: &str) -> bool {
    let context = context.trim_end_matches(['\0', '\n']);
    if is_full(want) {
        want == context
    } else {
        want == type_of(context)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_type_field() {
        assert_eq!(
            type_of("system_u:system_r:container_t:s0:c1,c2\0"),
            "container_t"
        );
        assert_eq!(type_of("unconfined_t"), "");
    }

    #[test]
    fn a_want_is_a_whole_context_or_a_type() {
        let c = "system_u:system_r:container_t:s0:c1,c2";
        assert!(matches(c, c));
        assert!(matches("container_t", c));
        assert!(!matches("system_u:system_r:container_t:s0:c3,c4", c));
        assert!(!matches("unconfined_t", c));
        assert!(is_full(c) && !is_full("container_t") && !is_full("a::b:c"));
        assert!(is_type("container_t") && !is_type("a b") && !is_type(""));
    }
}
