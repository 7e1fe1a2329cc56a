//! The real curl client on a Unix socket, the way users drive Wisp's REST API.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

/// One request with curl over the Unix socket `sock`: (HTTP status, body). A `body` is sent
/// as JSON. Status 0 means curl got no answer (connection refused, reset, timed out).
pub fn curl(sock: &Path, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
    let mut cmd = Command::new("curl");
    // `-w` appends the status on a line of its own, after whatever the body was.
    cmd.args(["-sS", "--max-time", "60", "--unix-socket"])
        .arg(sock)
        .args(["-X", method, "-w", "\n%{http_code}"])
        .arg(format!("http://localhost{path}"));
    if body.is_some() {
        cmd.args([
            "-H",
            "Content-Type: application/json",
            "--data-binary",
            "@-",
        ]);
    }
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("curl must be installed (apt-get install -y curl)");
    // Written and closed before waiting: curl reads the body to EOF.
    child
        .stdin
        .take()
        .expect("a piped stdin")
        .write_all(body.unwrap_or("").as_bytes())
        .expect("write the request body to curl");
    let out = child.wait_with_output().expect("wait for curl");
    let text = String::from_utf8(out.stdout).expect("curl printed UTF-8");
    let (body, code) = text
        .rsplit_once('\n')
        .unwrap_or_else(|| panic!("curl printed no status line: {text:?}"));
    let code = code
        .parse()
        .unwrap_or_else(|_| panic!("curl failed: {}", String::from_utf8_lossy(&out.stderr)));
    (code, body.to_string())
}
