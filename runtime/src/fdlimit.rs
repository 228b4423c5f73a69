//! The process's open-file limit (`ulimit -n`): every connection the server holds is a file
//! descriptor, and so is every outbound call and store connection. At start the soft limit is
//! raised towards the hard one; when it is still too low for `server.max_connections`, the
//! start says so.

/// Descriptors kept free beyond `server.max_connections`, for outbound calls to platforms and
/// targets, the store, the log and the watched configuration files.
pub const MARGIN: u64 = 256;

/// The highest soft limit asked for: Linux's default ceiling (`fs.nr_open`); far more than the
/// gateway needs, and never "unlimited".
pub const CEILING: u64 = 1 << 20;

/// Raises the soft open-file limit to the hard one (at most [`CEILING`]); returns the soft
/// limit now in force. On platforms without such a limit, returns [`CEILING`].
pub fn raise() -> std::io::Result<u64> {
    #[cfg(unix)]
    {
        rlimit::increase_nofile_limit(CEILING)
    }
    #[cfg(not(unix))]
    {
        Ok(CEILING)
    }
}

/// The soft open-file limit in force, when it can be read.
pub fn current() -> Option<u64> {
    #[cfg(unix)]
    {
        rlimit::Resource::NOFILE.get().ok().map(|(soft, _)| soft)
    }
    #[cfg(not(unix))]
    {
        None
    }
}

/// What to tell the operator when an open-file limit of `limit` is too low for
/// `max_connections` served connections plus [`MARGIN`]; `None` when it is enough.
pub fn advice(limit: u64, max_connections: usize) -> Option<String> {
    let connections = u64::try_from(max_connections).unwrap_or(u64::MAX);
    let needed = connections.saturating_add(MARGIN);
    if limit >= needed {
        return None;
    }
    let lower = match limit.checked_sub(MARGIN) {
        Some(fits) if fits > 0 => format!(", or lower `server.max_connections` to at most {fits}"),
        _ => String::new(),
    };
    Some(format!(
        "the open-file limit is {limit}, too low for server.max_connections ({max_connections}) plus {MARGIN} for outbound calls, the store and the log: near the cap, calls and store access will fail with \"too many open files\". Raise the limit to at least {needed} (`ulimit -n {needed}` before starting, `LimitNOFILE={needed}` in a systemd unit, `--ulimit nofile={needed}` with docker){lower}"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enough_descriptors_need_no_advice() {
        // 1024 connections + 256 spare = 1280 (by hand).
        assert_eq!(advice(1280, 1024), None);
        assert_eq!(advice(20_000, 1024), None);
        assert_eq!(advice(1_048_576, 1024), None);
        assert_eq!(advice(266, 10), None);
    }

    #[test]
    fn too_few_descriptors_say_what_to_do() {
        // The common soft limit equals the default cap: nothing left for calls and the store.
        let a = advice(1024, 1024).unwrap_or_default();
        assert!(a.contains("1024"), "{a}");
        assert!(a.contains("too many open files"), "{a}");
        assert!(a.contains("ulimit -n"), "{a}");
        assert!(a.contains("at least 1280"), "{a}");
        assert!(a.contains("server.max_connections"), "{a}");
        assert!(a.contains("at most 768"), "{a}");
        // One short.
        let a = advice(1279, 1024).unwrap_or_default();
        assert!(
            a.contains("at least 1280") && a.contains("at most 1023"),
            "{a}"
        );
        // A limit that leaves no room for any connection at all.
        let a = advice(200, 1024).unwrap_or_default();
        assert!(a.contains("at least 1280"), "{a}");
        assert!(!a.contains("at most"), "{a}");
    }
}
