//! Configuration: precedence file < env < flags, validation naming keys.

use std::path::PathBuf;

use vectorizer_server::config::{Config, LogFormat, Overrides};
use vectorizer_testkit::TempDir;

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn defaults_need_no_file() {
    let cfg = Config::load_from(None, &Overrides::default(), env(&[])).unwrap();
    assert_eq!(cfg, Config::default());
    assert_eq!(
        (cfg.server.host.as_str(), cfg.server.port),
        ("127.0.0.1", 15002)
    );
    assert!(!cfg.hub.enabled);
}

#[test]
fn file_then_env_then_flags() {
    let dir = TempDir::new("config");
    let file = dir.path().join("config.yml");
    std::fs::write(&file, "server:\n  port: 1000\n  host: 0.0.0.0\nlogging:\n  format: json\nhub:\n  cache:\n    quota_ttl_seconds: 7\n").unwrap();
    let cfg = Config::load_from(Some(&file), &Overrides::default(), env(&[])).unwrap();
    assert_eq!(cfg.server.port, 1000);
    assert_eq!(cfg.logging.format, LogFormat::Json);
    assert_eq!(cfg.hub.cache.quota_ttl_seconds, 7);
    let e = env(&[
        ("VECTORIZER_SERVER__PORT", "2000"),
        ("VECTORIZER_HUB__CACHE__QUOTA_TTL_SECONDS", "9"),
        ("OTHER", "x"),
    ]);
    let cfg = Config::load_from(Some(&file), &Overrides::default(), e.clone()).unwrap();
    assert_eq!(cfg.server.port, 2000);
    assert_eq!(cfg.hub.cache.quota_ttl_seconds, 9);
    assert_eq!(cfg.server.host, "0.0.0.0");
    let flags = Overrides {
        port: Some(3000),
        data_dir: Some(PathBuf::from("/tmp/x")),
        host: None,
        qdrant: true,
    };
    assert!(
        !cfg.qdrant.enabled && cfg.qdrant.port == 6333 && cfg.qdrant.host(&cfg.server) == "0.0.0.0"
    );
    let cfg = Config::load_from(Some(&file), &flags, e).unwrap();
    assert!(cfg.qdrant.enabled);
    assert_eq!(cfg.server.port, 3000);
    assert_eq!(cfg.storage.data_dir, PathBuf::from("/tmp/x"));
}

#[test]
fn bad_config_names_the_key() {
    let dir = TempDir::new("config-bad");
    let file = dir.path().join("config.yml");
    for (yaml, key) in [
        ("server:\n  prot: 1\n", "prot"),
        ("server:\n  port: seventy\n", "port"),
        ("hub:\n  api_url: ftp://x\n", "hub.api_url"),
        ("logging:\n  level: loud\n", "logging.level"),
        (
            "limits:\n  max_batch_points: 0\n",
            "limits.max_batch_points",
        ),
        ("storage:\n  data_dir: ''\n", "storage.data_dir"),
        ("nonsense: 1\n", "nonsense"),
    ] {
        std::fs::write(&file, yaml).unwrap();
        let err = Config::load_from(Some(&file), &Overrides::default(), env(&[]))
            .unwrap_err()
            .to_string();
        assert!(err.contains(key), "{yaml:?}: {err}");
    }
    // The message says what the key takes, in the file's words.
    for (yaml, says) in [
        (
            "logging:\n  format: xml\n",
            "`logging.format` must be one of text, json",
        ),
        (
            "server:\n  port: 70000\n",
            "`server.port` must be a whole number from 0 to 65535",
        ),
        (
            "server:\n  host: 'not a host!'\n",
            "`server.host` must be an IP address",
        ),
        (
            "hub:\n  enabled: maybe\n",
            "`hub.enabled` must be true or false",
        ),
        (
            "limits:\n  max_batch_points: -1\n",
            "`limits.max_batch_points` must be a whole number",
        ),
    ] {
        std::fs::write(&file, yaml).unwrap();
        let err = Config::load_from(Some(&file), &Overrides::default(), env(&[]))
            .unwrap_err()
            .to_string();
        assert!(err.contains(says), "{yaml:?}: {err}");
        assert!(
            !err.contains("integer") && !err.contains("constructor"),
            "{err}"
        );
    }
    let err = Config::load_from(
        None,
        &Overrides::default(),
        env(&[("VECTORIZER_SERVER__TIMEOUT", "3")]),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("timeout"), "{err}");
    let missing = Config::load_from(
        Some(&dir.path().join("none.yml")),
        &Overrides::default(),
        env(&[]),
    )
    .unwrap_err();
    assert!(missing.to_string().contains("does not exist"));
}

#[test]
fn the_shipped_example_config_loads() {
    let example = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../config.yml");
    let cfg = Config::load_from(Some(&example), &Overrides::default(), env(&[])).unwrap();
    assert!(!cfg.hub.enabled);
}

/// Secrets in the environment are never read as configuration keys, and
/// with the Hub on, metrics are private unless made public on purpose.
#[test]
fn secrets_are_not_config_keys_and_metrics_follow_the_hub() {
    let secrets = env(&[
        ("VECTORIZER_OPERATOR_TOKEN", "t"),
        ("VECTORIZER_API_KEY", "k"),
        ("VECTORIZER_READ_API_KEY", "r"),
        ("VECTORIZER_ACCESS_KEY", "a"),
        ("VECTORIZER_SERVER__PORT", "9000"),
    ]);
    let cfg = Config::load_from(None, &Overrides::default(), secrets).unwrap();
    assert_eq!(cfg.server.port, 9000);
    // One underscore for two is a mistake, said so.
    let err = Config::load_from(
        None,
        &Overrides::default(),
        env(&[("VECTORIZER_SERVER_PORT", "1")]),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("VECTORIZER_SERVER__PORT?"), "{err}");
    let dir = TempDir::new("config-metrics");
    let state = |pairs: &[(&str, &str)]| {
        let mut cfg = Config::load_from(None, &Overrides::default(), env(pairs)).unwrap();
        cfg.storage.data_dir = dir.path().join(format!("d{}", pairs.len()));
        vectorizer_server::state(&cfg).unwrap().metrics.public
    };
    assert!(state(&[]));
    assert!(!state(&[("VECTORIZER_HUB__ENABLED", "true")]));
    assert!(state(&[
        ("VECTORIZER_HUB__ENABLED", "true"),
        ("VECTORIZER_METRICS__PUBLIC", "true"),
    ]));
}
