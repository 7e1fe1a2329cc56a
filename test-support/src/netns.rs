//! A network namespace of the test's own with a tap device in it, so a guest's network card
//! has a real host side without touching the host's interfaces. Needs root and iproute2.

use std::ffi::OsStr;
use std::process::Command;

/// The address of the tap's host side, inside the namespace.
const HOST_ADDRESS: &str = "10.0.2.1/24";

/// A network namespace with a tap device whose host side is 10.0.2.1/24; deleted (with the
/// tap) on drop.
pub struct NetNs {
    pub name: String,
    pub tap: String,
}

impl NetNs {
    /// `tag` tells the namespaces of different test binaries apart; the pid, runs apart.
    pub fn new(tag: &str) -> NetNs {
        let name = format!("wisp{tag}{}", std::process::id());
        // Interface names are at most 15 bytes; the tap lives in its own namespace, so the
        // pid's low digits cannot collide with another test's tap.
        let tap = format!("wtap{}", std::process::id() % 100_000);
        let ns = NetNs { name, tap };
        for args in [
            vec!["netns", "add", &ns.name],
            vec!["-n", &ns.name, "tuntap", "add", &ns.tap, "mode", "tap"],
            vec!["-n", &ns.name, "addr", "add", HOST_ADDRESS, "dev", &ns.tap],
            vec!["-n", &ns.name, "link", "set", &ns.tap, "up"],
        ] {
            let st = Command::new("ip")
                .args(&args)
                .status()
                .expect("ip (iproute2)");
            assert!(st.success(), "ip {args:?} failed");
        }
        ns
    }

    /// `program`, to be run inside the namespace (`ip netns exec` execs it: the child's pid is
    /// the program's).
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name]).arg(program);
        cmd
    }

    /// The MAC address of the tap's host side.
    pub fn host_mac(&self) -> String {
        let out = self
            .command("cat")
            .arg(format!("/sys/class/net/{}/address", self.tap))
            .output()
            .expect("read the tap's address");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}
