//! The kernel recipe refuses a `.config` that does not honour its fragments, names
//! the options, and leaves no cache entry behind.

use wisp_tinyx::fragment::{Fragment, OptionValue};
use wisp_tinyx::kernel::{
    build_kernel_from, cache_entry, default_fragments, keyboard_fragments, FragmentSource,
    KernelError,
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

/// keyboard.config, applied last, turns back on what microvm.config turns off for the keyboard
/// path, leaves the rest of the recipe alone, and is a cache entry of its own.
#[test]
fn keyboard_fragment_turns_the_keyboard_path_back_on() {
    let parsed: Vec<Fragment> = keyboard_fragments()
        .iter()
        .map(|f| Fragment::parse(&f.text, &f.name).expect("fragment parses"))
        .collect();
    let merged = Fragment::merged(&parsed);
    let base = Fragment::merged(
        &default_fragments()
            .iter()
            .map(|f| Fragment::parse(&f.text, &f.name).expect("fragment parses"))
            .collect::<Vec<_>>(),
    );
    for option in ["INPUT", "SERIO", "SERIO_I8042", "KEYBOARD_ATKBD", "VT"] {
        // Off there, or left to follow its (off) dependencies.
        assert_ne!(
            base.get(option),
            Some(&OptionValue::Yes),
            "{option} in the default"
        );
        assert_eq!(
            merged.get(option),
            Some(&OptionValue::Yes),
            "{option} with keyboard"
        );
    }
    assert_eq!(merged.get("HID_SUPPORT"), Some(&OptionValue::Off));
    assert_eq!(merged.get("VIRTIO_MMIO"), Some(&OptionValue::Yes));
    assert_ne!(
        cache_entry(&keyboard_fragments()).expect("kernel source"),
        cache_entry(&default_fragments()).expect("kernel source")
    );
}
