//! Field-level checks shared by the configuration store: ids, file paths, kernel command line,
//! tap names and MAC addresses. Each returns a `VmmActionError` whose message names the field
//! and the offending value, so a user can fix the request from the message alone.

use crate::action::VmmActionError;
use std::path::{Path, PathBuf};
use wisp_hostfs::{FileKind, HostFsError};

/// Longest resource id (Firecracker's limit).
pub const MAX_ID_LEN: usize = 64;
/// x86 `COMMAND_LINE_SIZE` is 2048 bytes including the terminating NUL
/// (arch/x86/include/asm/setup.h).
pub const MAX_BOOT_ARGS_LEN: usize = 2047;
/// `IFNAMSIZ` is 16 including the NUL (include/uapi/linux/if.h).
pub const MAX_TAP_NAME_LEN: usize = 15;

/// Ids appear in URLs and in guest-visible serials: ASCII letters, digits, `_` and `-`.
pub fn validate_id(field: &str, id: &str) -> Result<(), VmmActionError> {
    let ok_char = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '-';
    if id.is_empty() || id.len() > MAX_ID_LEN || !id.chars().all(ok_char) {
        return Err(VmmActionError::bad_request(format!(
            "{field} `{id}` is invalid: use 1 to {MAX_ID_LEN} ASCII letters, digits, `_` or `-`"
        )));
    }
    Ok(())
}

/// Checks that `path` is a regular file this process can open (read-write when `write`), so
/// that a missing or unreadable file is reported when configured, not at boot.
pub fn check_file_opens(what: &str, path: &Path, write: bool) -> Result<(), VmmActionError> {
    check_host_file(what, path, FileKind::Regular, write)
}

/// Checks that `path` is a file of kind `kind` this process can open (read-write when
/// `write`), reached without symbolic links (docs/threat-model.md). A FIFO, socket, directory
/// or device is refused from its type alone: nothing is opened that could block the VMM
/// thread this runs on.
pub fn check_host_file(
    what: &str,
    path: &Path,
    kind: FileKind,
    write: bool,
) -> Result<(), VmmActionError> {
    if path.as_os_str().is_empty() {
        return Err(VmmActionError::bad_request(format!(
            "the path of the {what} is empty"
        )));
    }
    let opened = if write {
        wisp_hostfs::open_read_write(path, kind)
    } else {
        wisp_hostfs::open_read(path, kind)
    };
    opened.map(drop).map_err(|e| refused(what, path, &e))
}

/// Checks that a file the VMM will append to later (log, metrics) can be: either it exists
/// and is a regular file, or its directory exists; no symbolic link on the way.
pub fn check_append_target(what: &str, path: &Path) -> Result<(), VmmActionError> {
    check_parent_dir(what, path)?;
    wisp_hostfs::check_appendable(path).map_err(|e| refused(what, path, &e))
}

/// Checks that the VMM may bind a Unix socket at `path` later (vsock): its directory exists
/// and whatever is at the path now is a socket (a stale one is replaced at bind, a live one
/// is refused then).
pub fn check_socket_target(what: &str, path: &Path) -> Result<(), VmmActionError> {
    check_parent_dir(what, path)?;
    wisp_hostfs::check_bindable(path).map_err(|e| refused(what, path, &e))
}

/// Longest virtio-fs tag: the `tag` field of the device's config space (virtio 1.2 §5.11.4).
pub const MAX_FS_TAG_LEN: usize = 36;
/// Most request queues of one virtio-fs device.
pub const MAX_FS_QUEUES: u16 = 16;

/// A virtio-fs tag: 1 to 36 bytes, no NUL (the guest reads it as a NUL-padded string).
pub fn validate_fs_tag(tag: &str) -> Result<(), VmmActionError> {
    if tag.is_empty() || tag.len() > MAX_FS_TAG_LEN || tag.contains('\0') {
        return Err(VmmActionError::bad_request(format!(
            "fs tag {tag:?} is {} bytes: it must be 1 to {MAX_FS_TAG_LEN} bytes without NUL",
            tag.len()
        )));
    }
    Ok(())
}

/// A socket another process listens on (a vhost-user backend): it must exist and be a socket
/// itself, not a symbolic link. Nothing connects here: virtiofsd serves one connection only.
pub fn check_backend_socket(what: &str, path: &Path) -> Result<(), VmmActionError> {
    use std::os::unix::fs::FileTypeExt;
    check_parent_dir(what, path)?;
    let problem = match std::fs::symlink_metadata(path) {
        Err(_) => "it does not exist (start the backend, e.g. virtiofsd --socket-path, first)",
        Ok(m) if m.file_type().is_symlink() => "it is a symbolic link (give the socket itself)",
        Ok(m) if !m.file_type().is_socket() => "it is not a Unix socket",
        Ok(_) => return Ok(()),
    };
    Err(VmmActionError::bad_request(format!(
        "cannot use {what} {}: {problem}",
        path.display()
    )))
}

fn refused(what: &str, path: &Path, e: &HostFsError) -> VmmActionError {
    VmmActionError::bad_request(format!("cannot use {what} {}: {e}", path.display()))
}

/// Checks that a path the VMM will create or open later (log, metrics, vsock socket) is not
/// empty and that its directory exists.
pub fn check_parent_dir(what: &str, path: &Path) -> Result<(), VmmActionError> {
    if path.as_os_str().is_empty() {
        return Err(VmmActionError::bad_request(format!("{what} is empty")));
    }
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    if !parent.is_dir() {
        return Err(VmmActionError::bad_request(format!(
            "{what} {}: directory {} does not exist",
            path.display(),
            parent.display()
        )));
    }
    Ok(())
}

/// The kernel command line must fit the boot protocol's buffer and be a C string.
pub fn validate_boot_args(args: &str) -> Result<(), VmmActionError> {
    if args.len() > MAX_BOOT_ARGS_LEN {
        return Err(VmmActionError::bad_request(format!(
            "boot_args is {} bytes long; the limit is {MAX_BOOT_ARGS_LEN}",
            args.len()
        )));
    }
    if args.contains('\0') {
        return Err(VmmActionError::bad_request("boot_args contains a NUL byte"));
    }
    Ok(())
}

/// A tap device name the kernel will accept.
pub fn validate_tap_name(name: &str) -> Result<(), VmmActionError> {
    let bad = name.is_empty()
        || name.len() > MAX_TAP_NAME_LEN
        || name.contains(['/', '\0'])
        || name.chars().any(char::is_whitespace);
    if bad {
        return Err(VmmActionError::bad_request(format!(
            "host_dev_name `{name}` is not a valid interface name (1 to {MAX_TAP_NAME_LEN} \
             bytes, no `/` or whitespace)"
        )));
    }
    Ok(())
}

/// A MAC address written as six colon-separated hex bytes, e.g. `06:00:ac:10:00:02`.
pub fn validate_mac(mac: &str) -> Result<(), VmmActionError> {
    if parse_mac(mac).is_none() {
        return Err(VmmActionError::bad_request(format!(
            "guest_mac `{mac}` is not a MAC address like 06:00:ac:10:00:02"
        )));
    }
    Ok(())
}

/// Parses "aa:bb:cc:dd:ee:ff" (either case).
pub fn parse_mac(text: &str) -> Option<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut parts = text.split(':');
    for byte in mac.iter_mut() {
        let part = parts.next()?;
        if part.len() != 2 || !part.chars().all(|c| c.is_ascii_hexdigit()) {
            return None;
        }
        *byte = u8::from_str_radix(part, 16).ok()?;
    }
    parts.next().is_none().then_some(mac)
}

/// Writes a MAC address as "aa:bb:cc:dd:ee:ff".
pub fn format_mac(mac: &[u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// The file a path names, for comparing two paths; the path itself when it cannot be resolved.
pub fn canonical_or_given(path: &Path) -> PathBuf {
    std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf())
}

/// Longest `refill_time` accepted: an hour (a longer refill is a typo more often than a plan).
pub const MAX_REFILL_TIME_MS: u64 = 3_600_000;

/// Checks a Firecracker `rate_limiter` object; `field` names it in the error (e.g.
/// "rate_limiter" or "rx_rate_limiter"). A bucket must have tokens and a refill time: leaving
/// the bucket out is how one asks for no limit.
pub fn validate_rate_limiter(
    field: &str,
    limiter: &crate::config::RateLimiter,
) -> Result<(), VmmActionError> {
    let buckets = [("bandwidth", &limiter.bandwidth), ("ops", &limiter.ops)];
    for (kind, bucket) in buckets {
        let Some(b) = bucket else { continue };
        if b.size == 0 {
            return Err(VmmActionError::bad_request(format!(
                "{field}.{kind}.size must be greater than 0 (leave `{kind}` out for no limit)"
            )));
        }
        if b.refill_time == 0 || b.refill_time > MAX_REFILL_TIME_MS {
            return Err(VmmActionError::bad_request(format!(
                "{field}.{kind}.refill_time {} is out of range: it must be between 1 and \
                 {MAX_REFILL_TIME_MS} ms",
                b.refill_time
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_allow_firecracker_style_names_only() {
        assert!(validate_id("drive_id", "rootfs_1-a").is_ok());
        assert!(validate_id("drive_id", "").is_err());
        assert!(validate_id("drive_id", "a/b").is_err());
        assert!(validate_id("drive_id", &"x".repeat(MAX_ID_LEN + 1)).is_err());
    }

    #[test]
    fn mac_addresses_need_six_hex_pairs() {
        assert!(validate_mac("06:00:AC:10:00:02").is_ok());
        assert!(validate_mac("06:00:ac:10:00").is_err());
        assert!(validate_mac("06:00:ac:10:00:0g").is_err());
        assert!(validate_mac("06:00:ac:10:00:+2").is_err());
        assert_eq!(
            parse_mac("02:00:00:0A:ff:01"),
            Some([2, 0, 0, 0x0a, 0xff, 1])
        );
        assert_eq!(parse_mac("02:00:00:0a:ff:01:07"), None);
        assert_eq!(parse_mac("02:00:00:0a:ff:1"), None);
        assert_eq!(format_mac(&[2, 0, 0, 0x0a, 0xff, 1]), "02:00:00:0a:ff:01");
    }

    #[test]
    fn missing_file_message_names_the_file() {
        let err =
            check_file_opens("kernel image", Path::new("/nonexistent/vmlinux"), false).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/vmlinux"), "{err}");
        assert!(err.to_string().contains("kernel image"), "{err}");
    }

    #[test]
    fn a_directory_is_not_a_kernel() {
        let err = check_file_opens("kernel image", Path::new("/"), false).unwrap_err();
        assert!(err.to_string().contains("not a regular file"), "{err}");
    }

    #[test]
    fn a_log_path_through_a_symlink_or_on_a_fifo_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("target");
        std::fs::write(&target, b"keep").unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let err = check_append_target("log_path", &link).unwrap_err();
        assert!(err.to_string().contains("symbolic link"), "{err}");
        let err = check_append_target("log_path", Path::new("/dev/null")).unwrap_err();
        assert!(err.to_string().contains("character device"), "{err}");
        assert!(check_append_target("log_path", &dir.path().join("new.log")).is_ok());
        assert!(check_append_target("log_path", &target).is_ok());
        let err = check_socket_target("uds_path", &target).unwrap_err();
        assert!(err.to_string().contains("not a socket"), "{err}");
        assert_eq!(std::fs::read(&target).unwrap(), b"keep");
    }

    #[test]
    fn boot_args_respect_the_x86_limit() {
        assert!(validate_boot_args(&"a".repeat(MAX_BOOT_ARGS_LEN)).is_ok());
        assert!(validate_boot_args(&"a".repeat(MAX_BOOT_ARGS_LEN + 1)).is_err());
    }

    #[test]
    fn rate_limiter_buckets_need_tokens_and_a_refill_time() {
        use crate::config::{RateLimiter, TokenBucket};
        let bucket = |size, refill_time| TokenBucket {
            size,
            one_time_burst: None,
            refill_time,
        };
        let ok = RateLimiter {
            bandwidth: Some(bucket(1 << 20, 1000)),
            ops: Some(bucket(100, 1)),
        };
        assert!(validate_rate_limiter("rate_limiter", &ok).is_ok());
        assert!(validate_rate_limiter("rate_limiter", &RateLimiter::default()).is_ok());
        let zero = RateLimiter {
            ops: Some(bucket(0, 100)),
            ..RateLimiter::default()
        };
        let e = validate_rate_limiter("rx_rate_limiter", &zero).unwrap_err();
        assert!(e.to_string().contains("rx_rate_limiter.ops.size"), "{e}");
        let no_refill = RateLimiter {
            bandwidth: Some(bucket(10, 0)),
            ..RateLimiter::default()
        };
        let e = validate_rate_limiter("rate_limiter", &no_refill).unwrap_err();
        assert!(
            e.to_string().contains("rate_limiter.bandwidth.refill_time"),
            "{e}"
        );
    }
}
