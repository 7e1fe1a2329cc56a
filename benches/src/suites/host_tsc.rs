//! The host's TSC rate, to turn the cycle counts a guest prints into time. PVM guests (and
//! KVM guests without TSC scaling) read the host's TSC unscaled.

use std::process::Command;

/// The host's TSC rate in kHz: the kernel's refined calibration, else its first estimate
/// (both from dmesg), else /proc/cpuinfo's `cpu MHz` (the current clock, which equals the TSC
/// rate only without frequency scaling, as in a VM).
pub fn host_tsc_khz() -> Option<u64> {
    dmesg()
        .and_then(|text| tsc_khz_from_dmesg(&text))
        .or_else(|| {
            let text = std::fs::read_to_string("/proc/cpuinfo").ok()?;
            cpu_mhz_khz(&text)
        })
}

/// Where [`host_tsc_khz`] found the rate, for the report.
pub fn tsc_source() -> &'static str {
    if dmesg().and_then(|text| tsc_khz_from_dmesg(&text)).is_some() {
        "kernel log `tsc:` line"
    } else {
        "/proc/cpuinfo cpu MHz"
    }
}

fn dmesg() -> Option<String> {
    let out = Command::new("dmesg").output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// From kernel log text: `tsc: Refined TSC clocksource calibration: 2596.122 MHz` if present,
/// else `tsc: Detected 2596.122 MHz processor`.
pub fn tsc_khz_from_dmesg(text: &str) -> Option<u64> {
    let mhz_after = |marker: &str| {
        text.lines().rev().find_map(|line| {
            let rest = &line[line.find(marker)? + marker.len()..];
            mhz_to_khz(rest.split_whitespace().next()?)
        })
    };
    mhz_after("tsc: Refined TSC clocksource calibration: ").or_else(|| mhz_after("tsc: Detected "))
}

/// The first `cpu MHz : N` of /proc/cpuinfo, in kHz.
pub fn cpu_mhz_khz(cpuinfo: &str) -> Option<u64> {
    cpuinfo.lines().find_map(|line| {
        let (key, value) = line.split_once(':')?;
        (key.trim() == "cpu MHz")
            .then(|| mhz_to_khz(value.trim()))
            .flatten()
    })
}

/// "2596.122" (MHz) → 2596122 (kHz), exactly, without going through floating point.
fn mhz_to_khz(text: &str) -> Option<u64> {
    let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
    let mut digits: String = fraction.chars().take(3).collect();
    while digits.len() < 3 {
        digits.push('0');
    }
    let khz = whole.parse::<u64>().ok()? * 1000 + digits.parse::<u64>().ok()?;
    (khz > 0).then_some(khz)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tsc_rate_prefers_the_refined_calibration() {
        let log = "[    0.000058] tsc: Detected 2596.122 MHz processor\n\
                   [    1.2] tsc: Refined TSC clocksource calibration: 2595.99 MHz\n";
        assert_eq!(tsc_khz_from_dmesg(log), Some(2_595_990));
        let log = "[    0.000058] tsc: Detected 2596.122 MHz processor\n";
        assert_eq!(tsc_khz_from_dmesg(log), Some(2_596_122));
        assert_eq!(tsc_khz_from_dmesg("nothing here\n"), None);
        let cpuinfo = "processor\t: 0\ncpu MHz\t\t: 2596.1\ncache size\t: 512 KB\n";
        assert_eq!(cpu_mhz_khz(cpuinfo), Some(2_596_100));
    }
}
