//! The kernel recipe refuses a `.config` that does not honour its fragments, names
//! the options, and leaves no cache entry behind.

use wisp_tinyx::kernel::{
    build_kernel_from, cache_entry, default_fragments, FragmentSource, KernelError,
};

#[test]
fn option_whose_dependency_is_off_is_reported_by_name_and_nothing_is_cached() {
    let mut fragments = default_fragments();
    // virtio-net depends on NET: asking for it with NET off cannot be honoured.
    fragments.push(FragmentSource {
        name: "contradiction.config".into(),
        text: "# CONFIG_NET is not set\nCONFIG_VIRTIO_NET=y\n".into(),
    });
    let entry = cache_entry(&fragments).unwrap();
    let err = build_kernel_from(&fragments).unwrap_err();
    let KernelError::Config(mismatches) = &err else {
        panic!("expected a config mismatch, got {err}");
    };
    let names: Vec<&str> = mismatches.iter().map(|m| m.option.as_str()).collect();
    assert!(names.contains(&"VIRTIO_NET"), "{names:?}");
    // Everything under NET that microvm.config asks for is named too.
    assert!(
        names.contains(&"INET") && names.contains(&"VSOCKETS"),
        "{names:?}"
    );
    assert!(
        !names.contains(&"NET"),
        "NET itself is off as asked: {names:?}"
    );
    assert!(
        err.to_string()
            .contains("CONFIG_VIRTIO_NET: fragment asks for y"),
        "{err}"
    );
    assert!(
        !entry.exists(),
        "{} must not exist after a failed build",
        entry.display()
    );
}

#[test]
fn cache_key_changes_with_fragment_content() {
    let a = cache_entry(&default_fragments()).unwrap();
    let mut changed = default_fragments();
    changed[1].text.push_str("CONFIG_AIO=y\n");
    assert_ne!(a, cache_entry(&changed).unwrap());
    assert_eq!(a, cache_entry(&default_fragments()).unwrap());
}
