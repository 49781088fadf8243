//! An independent check of webhook signatures: the Standard Webhooks reference library for
//! Python (`standardwebhooks`, from PyPI), so that Depot's signatures are judged by code that
//! receivers actually use, not by Depot's own verifier.
//!
//! `.ci/run` installs the library into a venv and exports `DEPOT_PYTHON` (that venv's python);
//! without it the default path below is used.

use std::io::Write as _;
use std::process::{Command, Stdio};

use anyhow::{bail, Context as _};
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;

/// The venv `.ci/run` installs `standardwebhooks` into.
pub const DEFAULT_PYTHON: &str = "/var/tmp/depot-py/venv/bin/python";

/// The python that has `standardwebhooks`: `$DEPOT_PYTHON`, else [`DEFAULT_PYTHON`].
pub fn python() -> String {
    std::env::var("DEPOT_PYTHON").unwrap_or_else(|_| DEFAULT_PYTHON.to_owned())
}

const MISSING: i32 = 3;

const SCRIPT: &str = r#"
import base64, json, sys
try:
    from standardwebhooks.webhooks import Webhook
except ImportError as e:
    print(f"cannot import standardwebhooks: {e}", file=sys.stderr)
    sys.exit(3)
job = json.load(sys.stdin)
wh = Webhook(job["secret"])
failed = []
for i, d in enumerate(job["deliveries"]):
    headers = {"webhook-id": d["id"], "webhook-timestamp": d["timestamp"], "webhook-signature": d["signature"]}
    try:
        wh.verify(base64.b64decode(d["body"]), headers, json_parse=False)
    except Exception as e:
        failed.append(f"delivery {i} (webhook-id {d['id']!r}): {type(e).__name__}: {e}")
if failed:
    print("\n".join(failed), file=sys.stderr)
    sys.exit(1)
print(f"verified {len(job['deliveries'])}")
"#;

/// Verifies every delivery `(webhook-id, webhook-timestamp, webhook-signature, body)` against
/// `secret` with the reference library, in one python process. Err names each delivery that
/// fails. The library also checks that the timestamp is within 5 minutes of now, so this is
/// for freshly signed deliveries.
pub fn verify_standard_webhooks(secret: &str, deliveries: &[(String, String, String, Vec<u8>)]) -> anyhow::Result<()> {
    let python = python();
    let hint = format!(
        "run .ci/run, which installs standardwebhooks into /var/tmp/depot-py/venv and exports \
         DEPOT_PYTHON (python used: {python})"
    );
    let job = serde_json::json!({
        "secret": secret,
        "deliveries": deliveries
            .iter()
            .map(|(id, timestamp, signature, body)| serde_json::json!({
                "id": id,
                "timestamp": timestamp,
                "signature": signature,
                "body": STANDARD.encode(body),
            }))
            .collect::<Vec<_>>(),
    });
    let mut child = Command::new(&python)
        .arg("-c")
        .arg(SCRIPT)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot start {python}: {hint}"))?;
    {
        let mut stdin = child.stdin.take().context("python's stdin")?;
        stdin.write_all(job.to_string().as_bytes())?;
    }
    let out = child.wait_with_output()?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    match out.status.code() {
        Some(0) => Ok(()),
        Some(MISSING) => bail!("{}: {hint}", stderr.trim()),
        _ => bail!("standardwebhooks refused the signatures ({}):\n{}", out.status, stderr.trim()),
    }
}
