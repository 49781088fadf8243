//! Independent webhook signatures: the senders' and receivers' own Python libraries (from PyPI),
//! so that Depot's signatures are judged, and its verification fed, by code that real senders
//! and receivers use rather than by Depot's own.
//!
//! - [`verify_standard_webhooks`]: the Standard Webhooks reference library checks signatures
//!   Depot made (push delivery).
//! - [`sign_as_senders`]: stripe-python and the Standard Webhooks library sign deliveries for
//!   Depot to verify (sources).
//!
//! `.ci/run` installs both libraries into a venv and exports `DEPOT_PYTHON` (that venv's
//! python); without it the default path below is used.

use std::io::Write as _;
use std::process::{Command, Stdio};

use anyhow::{bail, Context as _};
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use serde_json::{json, Value};

/// The venv `.ci/run` installs the libraries into.
pub const DEFAULT_PYTHON: &str = "/var/tmp/depot-py/venv/bin/python";

/// The python that has the libraries: `$DEPOT_PYTHON`, else [`DEFAULT_PYTHON`].
pub fn python() -> String {
    std::env::var("DEPOT_PYTHON").unwrap_or_else(|_| DEFAULT_PYTHON.to_owned())
}

/// The exit status of a script that cannot import a library.
const MISSING: i32 = 3;

/// Runs `script` with `job` as JSON on its stdin and answers the JSON it prints. A script exits
/// with [`MISSING`] when a library is not installed, and with 1 (its reasons on stderr) when
/// what it checks fails.
pub fn run_python(script: &str, job: &Value) -> anyhow::Result<Value> {
    let python = python();
    let hint = format!(
        "run .ci/run, which installs stripe and standardwebhooks into /var/tmp/depot-py/venv and exports \
         DEPOT_PYTHON (python used: {python})"
    );
    let mut child = Command::new(&python)
        .arg("-c")
        .arg(script)
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
        Some(0) => serde_json::from_slice(&out.stdout).context("the script's output is not JSON"),
        Some(MISSING) => bail!("{}: {hint}", stderr.trim()),
        _ => bail!("the script failed ({}):\n{}", out.status, stderr.trim()),
    }
}

const VERIFY: &str = r#"
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
json.dump({"verified": len(job["deliveries"])}, sys.stdout)
"#;

/// Verifies every delivery `(webhook-id, webhook-timestamp, webhook-signature, body)` against
/// `secret` with the reference library, in one python process. Err names each delivery that
/// fails. The library also checks that the timestamp is within 5 minutes of now, so this is
/// for freshly signed deliveries.
pub fn verify_standard_webhooks(secret: &str, deliveries: &[(String, String, String, Vec<u8>)]) -> anyhow::Result<()> {
    let job = json!({
        "secret": secret,
        "deliveries": deliveries
            .iter()
            .map(|(id, timestamp, signature, body)| json!({
                "id": id,
                "timestamp": timestamp,
                "signature": signature,
                "body": STANDARD.encode(body),
            }))
            .collect::<Vec<_>>(),
    });
    run_python(VERIFY, &job).context("standardwebhooks refused the signatures").map(drop)
}

const SIGN: &str = r#"
import base64, datetime, json, sys
try:
    import stripe
    from standardwebhooks.webhooks import Webhook
except ImportError as e:
    print(f"cannot import: {e}", file=sys.stderr)
    sys.exit(3)
job = json.load(sys.stdin)
standard = Webhook(job["sw_secret"])
out = []
for d in job["deliveries"]:
    body = base64.b64decode(d["body"])
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    stripe_header = None
    if text is not None:
        stripe_header = stripe.WebhookSignature.generate_signature_header(
            text, job["stripe_secret"], timestamp=d["timestamp"])
    at = datetime.datetime.fromtimestamp(d["timestamp"], tz=datetime.timezone.utc)
    out.append({"stripe": stripe_header, "standard_webhooks": standard.sign(d["id"], at, body)})
json.dump(out, sys.stdout)
"#;

/// The signature headers senders' libraries make for one delivery.
#[derive(Clone, Debug)]
pub struct SenderSignatures {
    /// `Stripe-Signature`, by stripe-python's `WebhookSignature.generate_signature_header`;
    /// None for a body that is not UTF-8 (stripe-python signs text).
    pub stripe: Option<String>,
    /// `webhook-signature`, by the Standard Webhooks library's `Webhook.sign`.
    pub standard_webhooks: String,
}

/// Signs each delivery `(webhook-id, unix seconds, body)` with stripe-python (for
/// `stripe_secret`) and the Standard Webhooks library (for `sw_secret`), in one python process.
pub fn sign_as_senders(
    stripe_secret: &str,
    sw_secret: &str,
    deliveries: &[(String, i64, Vec<u8>)],
) -> anyhow::Result<Vec<SenderSignatures>> {
    let job = json!({
        "stripe_secret": stripe_secret,
        "sw_secret": sw_secret,
        "deliveries": deliveries
            .iter()
            .map(|(id, timestamp, body)| json!({"id": id, "timestamp": timestamp, "body": STANDARD.encode(body)}))
            .collect::<Vec<_>>(),
    });
    let out = run_python(SIGN, &job).context("signing with the senders' libraries")?;
    let signed = out.as_array().context("a list of signatures")?;
    if signed.len() != deliveries.len() {
        bail!("{} signatures for {} deliveries", signed.len(), deliveries.len());
    }
    signed
        .iter()
        .map(|s| {
            Ok(SenderSignatures {
                stripe: s["stripe"].as_str().map(str::to_owned),
                standard_webhooks: s["standard_webhooks"].as_str().context("a webhook-signature")?.to_owned(),
            })
        })
        .collect()
}
