#![allow(clippy::unwrap_used)]

use super::*;
use std::net::IpAddr;
use std::time::Duration;

fn load(mode: Mode, args: &[&str], env: &[(&str, &str)], file: Option<&str>) -> Result<Config, String> {
    let args: Vec<String> = args.iter().map(|s| (*s).to_owned()).collect();
    let env: Vec<(String, String)> = env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
    let lookup = move |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    let file = file.map(str::to_owned);
    let read = move |_: &str| file.clone().ok_or_else(|| "no such file".to_owned());
    match Config::load(mode, &Sources { args: &args, env: &lookup, read_file: &read })? {
        Loaded::Config(c) => Ok(*c),
        Loaded::Help => Err("help".to_owned()),
    }
}

#[test]
fn file_then_env_then_flags() {
    let file = "listen = \"127.0.0.1:1\"\nrate_limit_ip_burst = 7\naccess_token_ttl = 120\ntrusted_proxies = [\"10.0.0.1\", \"10.1.0.0/16\"]\n";
    let c = load(
        Mode::Serve,
        &["--config", "f.toml", "--access-token-ttl", "300"],
        &[("DEPOT_LISTEN", "127.0.0.1:2"), ("DEPOT_ACCESS_TOKEN_TTL", "200")],
        Some(file),
    )
    .unwrap();
    assert_eq!(c.listen, "127.0.0.1:2".parse().unwrap(), "env beats the file");
    assert_eq!(c.access_token_ttl, 300, "flags beat env");
    assert_eq!(c.rate_limit_ip_burst, 7, "the file beats defaults");
    assert_eq!(c.trusted_proxies.len(), 2);
    assert!(c.trusted_proxies[1].contains(&"10.1.200.3".parse::<IpAddr>().unwrap()));
    assert!(!c.trusted_proxies[0].contains(&"10.0.0.2".parse::<IpAddr>().unwrap()));
    assert_eq!(c.data_dir, PathBuf::from("depot-data"));
}

#[test]
fn trusted_proxies_take_addresses_and_ranges() {
    let c = load(Mode::Serve, &["--trusted-proxies", "192.168.0.0/24, ::ffff:10.0.0.7,fd00::/8"], &[], None).unwrap();
    let trusted = |ip: &str| c.trusted_proxies.iter().any(|n| n.contains(&ip.parse::<IpAddr>().unwrap()));
    assert!(trusted("192.168.0.200") && trusted("10.0.0.7") && trusted("fd12::1"));
    assert!(!trusted("192.168.1.1") && !trusted("10.0.0.8") && !trusted("fe80::1"));
    for bad in ["10.0.0.1/8", "10.0.0.0/33", "proxy.example", "10.0.0/8"] {
        let e = load(Mode::Serve, &["--trusted-proxies", bad], &[], None).unwrap_err();
        assert!(e.contains("trusted-proxies") || e.contains("trusted_proxies"), "{bad}: {e}");
        assert!(e.contains(bad), "{bad}: {e}");
    }
}

#[test]
fn modes_differ_in_defaults() {
    assert!(load(Mode::Dev, &[], &[], None).unwrap().listen.ip().is_loopback());
    assert!(!load(Mode::Serve, &[], &[], None).unwrap().listen.ip().is_loopback());
    let c = load(Mode::Dev, &["--listen=127.0.0.1:0", "--rate-limit", "off"], &[], None).unwrap();
    assert_eq!(c.listen.port(), 0);
    assert!(!c.rate_limit);
}

#[test]
fn bad_settings_are_refused_by_name() {
    let e = load(Mode::Serve, &["--bogus", "1"], &[], None).unwrap_err();
    assert!(e.contains("--bogus"), "{e}");
    let e = load(Mode::Serve, &["--listen", "nowhere"], &[], None).unwrap_err();
    assert!(e.contains("--listen"), "{e}");
    let e = load(Mode::Serve, &[], &[("DEPOT_JWT_SECRET", "short")], None).unwrap_err();
    assert!(e.contains("jwt_secret"), "{e}");
    let e = load(Mode::Serve, &["--jwt-leeway", "60"], &[], None).unwrap_err();
    assert!(e.contains("jwt_leeway"), "{e}");
    let e = load(Mode::Serve, &["--config", "f"], &[], Some("nope = 1")).unwrap_err();
    assert!(e.contains("unknown setting \"nope\""), "{e}");
    let e = load(Mode::Serve, &["--peers", "1=a:1,2=b:1"], &[], None).unwrap_err();
    assert!(e.contains("--metadata-url postgres://"), "a cluster without Postgres: {e}");
    let pg = ["--metadata-url", "postgres://u@127.0.0.1/depot"];
    let cluster = |extra: &[&str]| {
        let mut args = vec!["--peers", "1=a:1,2=b:1,3=c:1"];
        args.extend_from_slice(&pg);
        args.extend_from_slice(extra);
        load(Mode::Serve, &args, &[], None)
    };
    let e = cluster(&[]).unwrap_err();
    assert!(e.contains("cluster_secret: required"), "{e}");
    let e = cluster(&["--cluster-secret", "short"]).unwrap_err();
    assert!(e.contains("at least 16 bytes"), "{e}");
    let ok = cluster(&["--cluster-secret", "0123456789abcdef"]).unwrap();
    assert!(ok.clustered());
    let e = cluster(&["--cluster-secret", "0123456789abcdef", "--node-id", "4"]).unwrap_err();
    assert!(e.contains("id 4 is not in the list"), "{e}");
    let e = cluster(&["--cluster-secret", "0123456789abcdef", "--wait-for", "4"]).unwrap_err();
    assert!(e.contains("wait_for must be 1-3"), "{e}");
    let e =
        load(Mode::Serve, &["--peers", "1=a:1,1=b:1", "--cluster-secret", "0123456789abcdef"], &[], None).unwrap_err();
    assert!(e.contains("distinct"), "{e}");
    let e = load(Mode::Serve, &["--metadata-url", "mysql://x"], &[], None).unwrap_err();
    assert!(e.contains("postgres://"), "{e}");
    let c = load(Mode::Serve, &["--metadata-url", "postgres://u@127.0.0.1/depot"], &[], None).unwrap();
    assert!(c.uses_postgres());
    let e = load(Mode::Serve, &["--metadata-url", "postgres://u:pw@h/depot?sslmode=verfy-ca"], &[], None).unwrap_err();
    assert!(e.contains("sslmode=\"verfy-ca\" is not supported") && !e.contains("pw@"), "{e}");
    let file = "metadata_url = \"postgres://u@h/depot?sslmode=verify-full\"\nmetadata_ca_file = \"/etc/depot/pg.pem\"";
    let c = load(Mode::Serve, &["--config", "f.toml"], &[], Some(file)).unwrap();
    assert_eq!(c.metadata_ca_file.as_deref(), Some(std::path::Path::new("/etc/depot/pg.pem")));
    let c = load(Mode::Serve, &[], &[("DEPOT_METADATA_CA_FILE", "/x.pem")], None).unwrap();
    assert_eq!(c.metadata_ca_file.as_deref(), Some(std::path::Path::new("/x.pem")));
    let e = load(Mode::Serve, &["--listen"], &[], None).unwrap_err();
    assert!(e.contains("--listen") && e.contains("value"), "{e}");
    let e = load(Mode::Serve, &["--rate-limit-ip-burst", "0"], &[], None).unwrap_err();
    assert!(e.contains("rate_limit_ip_burst"), "{e}");
    let e = load(Mode::Serve, &["--max-delay-ms", "9223372036854775807"], &[], None).unwrap_err();
    assert!(e.contains("max_delay_ms must be"), "{e}");
    let e = load(Mode::Serve, &["--body-read-timeout-ms", "0"], &[], None).unwrap_err();
    assert!(e.contains("body_read_timeout_ms must be"), "{e}");
    let c = load(Mode::Serve, &["--max-delay-ms", "1000", "--body-read-timeout-ms", "500"], &[], None).unwrap();
    assert_eq!(c.gateway().max_delay_ms, 1000);
    assert_eq!(c.gateway().body_read_timeout, Duration::from_millis(500));
    assert_eq!(Config::defaults(Mode::Serve).gateway().max_delay_ms, 365 * 24 * 3600 * 1000);
}

#[test]
fn the_cluster_secret_comes_from_a_file_or_the_environment() {
    let read = |path: &str| match path {
        "/run/depot/secret" => Ok("0123456789abcdef-from-file\n".to_owned()),
        "/crlf" => Ok("0123456789abcdef-crlf\r\n".to_owned()),
        "/spaces" => Ok(" 0123456789abcdef \n".to_owned()),
        "/empty" => Ok(String::new()),
        "/newline" => Ok("\n".to_owned()),
        "/short" => Ok("short\n".to_owned()),
        _ => Err(format!("reading {path}: No such file or directory")),
    };
    let run = |args: &[&str], env: &[(&str, &str)], config: Option<&str>| {
        let args: Vec<String> = args.iter().map(|s| (*s).to_owned()).collect();
        let env: Vec<(String, String)> = env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        let lookup = move |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        let config = config.map(str::to_owned);
        let read = move |path: &str| match (path, &config) {
            ("depot.toml", Some(text)) => Ok(text.clone()),
            _ => read(path),
        };
        match Config::load(Mode::Serve, &Sources { args: &args, env: &lookup, read_file: &read }) {
            Ok(Loaded::Config(c)) => Ok(c.cluster_secret),
            Ok(Loaded::Help) => Err("help".to_owned()),
            Err(e) => Err(e),
        }
    };
    let secret = |s: &str| Ok(Some(s.to_owned()));
    assert_eq!(run(&["--cluster-secret-file", "/run/depot/secret"], &[], None), secret("0123456789abcdef-from-file"));
    assert_eq!(run(&["--cluster-secret-file", "/crlf"], &[], None), secret("0123456789abcdef-crlf"));
    assert_eq!(
        run(&["--cluster-secret-file", "/spaces"], &[], None),
        secret(" 0123456789abcdef "),
        "only the newline goes"
    );
    assert_eq!(
        run(&[], &[("DEPOT_CLUSTER_SECRET_FILE", "/run/depot/secret")], None),
        secret("0123456789abcdef-from-file")
    );
    let toml = "cluster_secret_file = \"/run/depot/secret\"\n";
    assert_eq!(run(&["--config", "depot.toml"], &[], Some(toml)), secret("0123456789abcdef-from-file"));
    assert_eq!(run(&[], &[("DEPOT_CLUSTER_SECRET", "0123456789abcdef-env")], None), secret("0123456789abcdef-env"));
    assert_eq!(run(&["--cluster-secret", "0123456789abcdef-flag"], &[], None), secret("0123456789abcdef-flag"));

    for (args, env, refused) in [
        (&["--cluster-secret-file", "/empty"][..], &[][..], "cluster_secret_file: /empty is empty"),
        (&["--cluster-secret-file", "/newline"], &[], "cluster_secret_file: /newline is empty"),
        (&["--cluster-secret-file", "/short"], &[], "cluster_secret_file: the cluster secret must be at least 16"),
        (&["--cluster-secret-file", "/missing"], &[], "cluster_secret_file: reading /missing: No such file"),
        (
            &["--cluster-secret-file", "/run/depot/secret"],
            &[("DEPOT_CLUSTER_SECRET", "0123456789abcdef-env")],
            "cluster_secret and cluster_secret_file are both set",
        ),
    ] {
        let e = run(args, env, None).unwrap_err();
        assert!(e.contains(refused), "{args:?}: {e}");
        assert!(!e.contains("from-file") && !e.contains("-env"), "a refusal never echoes the secret: {e}");
    }
    // A flag naming the file overrides the file the config names.
    let toml = "cluster_secret_file = \"/missing\"\n";
    assert_eq!(
        run(&["--config", "depot.toml", "--cluster-secret-file", "/crlf"], &[], Some(toml)),
        secret("0123456789abcdef-crlf")
    );
}

#[test]
fn cluster_tls_takes_all_three_files_and_a_secret() {
    let secret = ["--cluster-secret", "0123456789abcdef"];
    let files = ["--cluster-tls-cert", "/no/c.pem", "--cluster-tls-key", "/no/k.pem", "--cluster-tls-ca", "/no/ca.pem"];
    let e = load(Mode::Serve, &[&secret[..], &files[..2]].concat(), &[], None).unwrap_err();
    assert!(e.contains("go together"), "{e}");
    let e = load(Mode::Serve, &files, &[], None).unwrap_err();
    assert!(e.contains("only with a cluster secret"), "{e}");
    let c = load(Mode::Serve, &[&secret[..], &files[..]].concat(), &[], None).unwrap();
    let e = c.cluster_tls().unwrap_err();
    assert!(e.contains("reading /no/c.pem"), "{e}");
    assert!(load(Mode::Serve, &secret, &[], None).unwrap().cluster_tls().unwrap().is_none());
}

#[test]
fn push_to_private_networks_is_off_for_serve_and_on_for_dev_unless_configured() {
    assert!(!Config::defaults(Mode::Serve).gateway().push_allow_private_networks);
    assert!(Config::defaults(Mode::Dev).gateway().push_allow_private_networks);
    let c = load(Mode::Serve, &["--push-allow-private-networks", "on"], &[], None).unwrap();
    assert!(c.gateway().push_allow_private_networks);
    let c = load(Mode::Dev, &[], &[("DEPOT_PUSH_ALLOW_PRIVATE_NETWORKS", "off")], None).unwrap();
    assert!(!c.gateway().push_allow_private_networks);
}

#[test]
fn the_tiering_table_is_read_from_the_file_env_and_flags() {
    // What terraform/modules/node-config renders.
    let file = "node_id = 1\n\n[tiering]\nbucket = \"depot-tiering-1a2b\"\nendpoint = \"https://s3.eu-west-1.amazonaws.com\"\nregion = \"eu-west-1\"\n";
    let c = load(Mode::Serve, &["--config", "f"], &[], Some(file)).unwrap();
    assert_eq!(c.tiering.bucket.as_deref(), Some("depot-tiering-1a2b"));
    assert_eq!(c.tiering.endpoint.as_deref(), Some("https://s3.eu-west-1.amazonaws.com"));
    assert_eq!(c.tiering.region.as_deref(), Some("eu-west-1"));
    assert_eq!((c.tiering.path_style, c.tiering.cache_bytes), (false, 1 << 30));
    let c = load(
        Mode::Serve,
        &["--config", "f", "--tiering-path-style", "on"],
        &[("DEPOT_TIERING_PREFIX", "node-1/"), ("DEPOT_TIERING_CACHE_BYTES", "33554432")],
        Some(file),
    )
    .unwrap();
    assert_eq!((c.tiering.prefix.as_str(), c.tiering.path_style, c.tiering.cache_bytes), ("node-1/", true, 32 << 20));
    assert_eq!(load(Mode::Serve, &[], &[], None).unwrap().tiering, Tiering::default());
    for (file, refused) in [
        ("[tiering]\nbucket = \"b-1\"\nsecret = \"x\"\n", "unknown setting \"secret\" in [tiering]"),
        ("[tiering]\nendpoint = \"https://x\"\n", "bucket is required"),
        ("[tiering]\nbucket = \"B\"\n", "tiering.bucket"),
        ("[tiering]\nbucket = \"b-1\"\nendpoint = \"ftp://x\"\n", "tiering.endpoint"),
        ("[tiering]\nbucket = \"b-1\"\ncache_bytes = 1\n", "tiering.cache_bytes"),
        ("[tiering]\nbucket = \"b-1\"\npath_style = \"maybe\"\n", "tiering.path_style"),
        ("tiering = 1\n", "must be a table"),
    ] {
        let e = load(Mode::Serve, &["--config", "f"], &[], Some(file)).unwrap_err();
        assert!(e.contains(refused), "{file:?}: {e}");
    }
}

#[test]
fn help_lists_every_setting_with_env_and_default() {
    let h = help(Mode::Serve);
    for s in SETTINGS {
        assert!(h.contains(&s.flag()) && h.contains(&s.env()), "{}", s.name);
    }
    assert!(h.contains("default 0.0.0.0:4444"));
    assert!(matches!(load(Mode::Serve, &["--help"], &[], None), Err(e) if e == "help"));
}

#[test]
fn debug_output_names_every_setting_but_shows_no_secret() {
    let mut c = Config::defaults(Mode::Serve);
    c.jwt_secret = Some("jwt-secret-0123456789abcdef0123456789".to_owned());
    c.cluster_secret = Some("cluster-secret-0123456789abcdef01234".to_owned());
    c.metadata_url = Some("postgres://depot:pg-password-42@db.internal:5432/depot".to_owned());
    let shown = format!("{c:?}");
    for secret in ["jwt-secret-0123", "cluster-secret-0123", "pg-password-42"] {
        assert!(!shown.contains(secret), "{secret} in {shown}");
    }
    assert!(shown.contains("jwt_secret: Some(<redacted>)"), "{shown}");
    assert!(shown.contains("metadata_url: Some(<redacted>)"), "{shown}");
    assert!(shown.contains("access_token_ttl: "), "{shown}");
    // Unset secrets say so.
    assert!(format!("{:?}", Config::defaults(Mode::Serve)).contains("cluster_secret: None"));
}
