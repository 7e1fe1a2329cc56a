//! Fuzzes the `--config-file` document: whatever parses must serialise and parse back to the
//! same value, and validation must answer without panicking.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wisp_api::{HostLimits, VmConfig, VmResources};

fuzz_target!(|data: &[u8]| {
    let Ok(cfg) = serde_json::from_slice::<VmConfig>(data) else {
        return;
    };
    let text = serde_json::to_string(&cfg).expect("a parsed config serialises");
    let back: VmConfig = serde_json::from_str(&text).expect("a serialised config parses");
    assert_eq!(back, cfg);
    let _ = VmResources::from_config(cfg, HostLimits::default());
});
