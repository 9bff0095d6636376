//! Unit tests of endpoint egress: auth headers, TLS material checks, proxy choice and URLs.

use super::*;
use crate::config::{BasicAuth, BearerAuth};
use crate::index::endpoint::{Endpoint, validate};
use std::time::Duration;

fn base() -> EndpointConfig {
    EndpointConfig::new("ep", "https://hooks.example.com/in")
}

fn env(name: &str) -> Option<String> {
    (name == "HOOKS_PASSWORD").then(|| "from-env".to_string())
}

fn field(c: &EndpointConfig) -> String {
    validate(c, false, &env).unwrap_err().field
}

fn built(c: EndpointConfig) -> Endpoint {
    Endpoint::build(c, false, Duration::from_secs(5), &env).unwrap()
}

fn basic(username: &str, password: Option<&str>, password_env: Option<&str>) -> AuthConfig {
    AuthConfig {
        basic: Some(BasicAuth {
            username: username.into(),
            password: password.map(Into::into),
            password_env: password_env.map(Into::into),
        }),
        ..Default::default()
    }
}

fn with_auth(auth: AuthConfig) -> EndpointConfig {
    let mut c = base();
    c.auth = Some(Box::new(auth));
    c
}

fn oauth(token_url: &str) -> EndpointConfig {
    with_auth(AuthConfig {
        oauth2: Some(OAuth2Config {
            token_url: token_url.into(),
            client_id: "cid".into(),
            client_secret: Some("cs".into()),
            ..Default::default()
        }),
        ..Default::default()
    })
}

#[test]
fn basic_and_bearer_become_a_sensitive_authorization_value() {
    let e = built(with_auth(basic("hooks", Some("p4ss"), None)));
    let Some(Auth::Header(value)) = e.egress().and_then(|g| g.auth.as_ref()) else {
        panic!("a header");
    };
    assert_eq!(value, "Basic aG9va3M6cDRzcw==");
    assert!(value.is_sensitive());
    let e = built(with_auth(basic("hooks", None, Some("HOOKS_PASSWORD"))));
    let Some(Auth::Header(value)) = e.egress().and_then(|g| g.auth.as_ref()) else {
        panic!("a header");
    };
    assert_eq!(value, &format!("Basic {}", BASE64.encode("hooks:from-env")));
    assert!(
        !e.egress().unwrap().needs_own_client(),
        "auth alone shares the clients"
    );
    let e = built(with_auth(AuthConfig {
        bearer: Some(BearerAuth {
            token: Some("eyJ.abc-_~+/=".into()),
            token_env: None,
        }),
        ..Default::default()
    }));
    assert!(matches!(
        e.egress().and_then(|g| g.auth.as_ref()),
        Some(Auth::Header(v)) if v == "Bearer eyJ.abc-_~+/="
    ));
}

#[test]
fn auth_kinds_exclude_each_other_and_errors_name_the_field() {
    assert_eq!(field(&with_auth(AuthConfig::default())), "auth");
    let mut two = basic("u", Some("p"), None);
    two.bearer = Some(BearerAuth {
        token: Some("t".into()),
        token_env: None,
    });
    assert_eq!(field(&with_auth(two)), "auth.bearer");
    let mut header = with_auth(basic("u", Some("p"), None));
    header.headers.insert("authorization".into(), "x".into());
    assert_eq!(field(&header), "headers.authorization");
    for (auth, expected) in [
        (basic("a:b", Some("p"), None), "auth.basic.username"),
        (basic("", Some("p"), None), "auth.basic.username"),
        (basic("u", None, None), "auth.basic.password"),
        (basic("u", Some("p"), Some("V")), "auth.basic.password_env"),
        (basic("u", None, Some("UNSET")), "auth.basic.password_env"),
        (basic("u", Some("p\n"), None), "auth.basic.password"),
        (
            basic("u", Some(&"p".repeat(1025)), None),
            "auth.basic.password",
        ),
    ] {
        assert_eq!(field(&with_auth(auth)), expected);
    }
    let bearer = |token: &str| {
        with_auth(AuthConfig {
            bearer: Some(BearerAuth {
                token: Some(token.into()),
                token_env: None,
            }),
            ..Default::default()
        })
    };
    assert_eq!(field(&bearer("two words")), "auth.bearer.token");
    assert_eq!(field(&bearer(&"t".repeat(8193))), "auth.bearer.token");
}

#[test]
fn a_token_url_is_checked_like_a_url() {
    built(oauth("https://login.example.com/oauth2/token"));
    for url in [
        "ftp://login.example.com/",
        "http://login.example.com/token",
        "https://10.0.0.1/token",
        "https://localhost/token",
        "https://u:p@login.example.com/token",
        "not a url",
    ] {
        assert_eq!(field(&oauth(url)), "auth.oauth2.token_url", "{url}");
    }
    let mut c = oauth("http://login.example.com/token");
    c.allow_http = true;
    validate(&c, false, &env).unwrap();
    validate(&oauth("http://127.0.0.1:9/token"), true, &env).unwrap();
    let mut c = oauth("https://login.example.com/token");
    if let Some(o) = c.auth.as_mut().and_then(|a| a.oauth2.as_mut()) {
        o.scope = Some(String::new());
    }
    assert_eq!(field(&c), "auth.oauth2.scope");
    let mut c = oauth("https://login.example.com/token");
    if let Some(o) = c.auth.as_mut().and_then(|a| a.oauth2.as_mut()) {
        o.client_secret = None;
    }
    assert_eq!(field(&c), "auth.oauth2.client_secret");
}

#[test]
fn a_changed_oauth2_client_has_another_cache_key() {
    let key = |c: EndpointConfig| match built(c).egress().and_then(|g| g.auth.clone()) {
        Some(Auth::OAuth2(o)) => o.cache_key,
        _ => panic!("an oauth2 client"),
    };
    let a = key(oauth("https://login.example.com/token"));
    assert_eq!(a, key(oauth("https://login.example.com/token")));
    let mut other = oauth("https://login.example.com/token");
    if let Some(o) = other.auth.as_mut().and_then(|a| a.oauth2.as_mut()) {
        o.client_secret = Some("rotated".into());
    }
    assert_ne!(a, key(other));
    let mut renamed = oauth("https://login.example.com/token");
    renamed.id = "other".into();
    assert_ne!(a, key(renamed), "tokens are per endpoint");
}

/// A CA and a client certificate it signed, and a key of another pair.
fn pems() -> (String, String, String, String) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca, ca_key);
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["client".to_string()])
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    let stranger = rcgen::KeyPair::generate().unwrap();
    (
        ca_cert.pem(),
        cert.pem(),
        key.serialize_pem(),
        stranger.serialize_pem(),
    )
}

fn with_tls(cert: Option<&str>, key: Option<&str>, ca: Option<&str>) -> EndpointConfig {
    let mut c = base();
    c.tls = Some(Box::new(TlsConfig {
        client_cert: cert.map(Into::into),
        client_key: key.map(Into::into),
        ca: ca.map(Into::into),
    }));
    c
}

#[test]
fn tls_material_is_parsed_and_checked_when_saved() {
    let (ca, cert, key, stranger) = pems();
    let e = built(with_tls(Some(&cert), Some(&key), Some(&ca)));
    let egress = e.egress().unwrap();
    assert!(egress.needs_own_client());
    let tls = egress.tls.as_ref().unwrap();
    assert!(
        tls.identity_pem
            .as_ref()
            .unwrap()
            .starts_with(b"-----BEGIN CERTIFICATE")
    );
    let same = built(with_tls(Some(&cert), Some(&key), Some(&ca)));
    assert_eq!(egress.client_key, same.egress().unwrap().client_key);
    let ca_only = built(with_tls(None, None, Some(&ca)));
    assert_ne!(egress.client_key, ca_only.egress().unwrap().client_key);

    for (c, expected) in [
        (with_tls(Some(&cert), None, None), "tls.client_key"),
        (with_tls(None, Some(&key), None), "tls.client_cert"),
        (
            with_tls(Some("garbage"), Some(&key), None),
            "tls.client_cert",
        ),
        (
            with_tls(Some(&cert), Some("garbage"), None),
            "tls.client_key",
        ),
        (
            with_tls(Some(&cert), Some(&stranger), None),
            "tls.client_key",
        ),
        (
            with_tls(
                None,
                None,
                Some("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"),
            ),
            "tls.ca",
        ),
        (with_tls(None, None, None), "tls"),
        (
            with_tls(None, None, Some(&"x".repeat(64 * 1024 + 1))),
            "tls.ca",
        ),
    ] {
        assert_eq!(field(&c), expected);
    }
    let mut plain = with_tls(None, None, Some(&ca));
    plain.url = "http://hooks.example.com/in".into();
    plain.allow_http = true;
    assert_eq!(field(&plain), "tls");
    let message = validate(&with_tls(Some(&cert), Some(&stranger), None), false, &env)
        .unwrap_err()
        .message;
    assert!(!message.contains("PRIVATE KEY"), "{message}");
}

#[test]
fn a_proxy_is_a_url_without_credentials_or_none() {
    let proxy = |text: &str| {
        let mut c = base();
        c.proxy = Some(Box::new(text.into()));
        c
    };
    let direct = built(proxy("none"));
    assert_eq!(direct.egress().unwrap().proxy, ProxyChoice::Direct);
    let via = built(proxy("http://10.0.0.3:3128"));
    assert!(matches!(&via.egress().unwrap().proxy, ProxyChoice::Via(u) if u.port() == Some(3128)));
    assert_ne!(
        direct.egress().unwrap().client_key,
        via.egress().unwrap().client_key
    );
    for bad in [
        "socks5://10.0.0.3:1080",
        "http://u:p@10.0.0.3:3128",
        "http://10.0.0.3:3128/path",
        "proxy:3128",
        "",
    ] {
        assert_eq!(field(&proxy(bad)), "proxy", "{bad}");
    }
}
