//! Decode never panics: random bytes, JSON-shaped noise, and every truncation
//! and single-byte mutation of valid messages each give an event that keeps
//! the contract or a dead-letter reason.

use recur::stage::decode::{
    DecodeConfig, DecodeError, Event, Fields, MAX_DETAIL_BYTES, MAX_TS_MS, decode,
};

/// xorshift64*: deterministic, so a failure reproduces.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn cfg(width: usize) -> DecodeConfig {
    DecodeConfig {
        fields: Fields::default(),
        width,
        max_bytes: 512,
        max_stream_bytes: 256,
        max_ts_ms: MAX_TS_MS,
    }
}

/// Decodes and checks whichever outcome against the contract.
fn check(
    cfg: &DecodeConfig,
    key: Option<&[u8]>,
    value: &[u8],
    kafka_ts: Option<i64>,
) -> Result<Event, DecodeError> {
    let result = decode(cfg, key, Some(value), kafka_ts);
    match &result {
        Ok(e) => {
            assert!(!e.stream.is_empty(), "{:?}", String::from_utf8_lossy(value));
            assert_eq!(e.values.len(), cfg.width);
            assert!(e.values.iter().all(|v| v.is_finite()));
            assert!((0..=MAX_TS_MS).contains(&e.ts_ms));
        }
        Err(e) => {
            assert!(!e.detail.is_empty());
            assert!(e.detail.len() <= MAX_DETAIL_BYTES);
            assert!(e.to_string().starts_with(e.reason.as_str()));
        }
    }
    result
}

const VALID: [&str; 5] = [
    r#"{"stream":"meter-17","ts":1467331200000,"values":[12.5,-0.25,7]}"#,
    r#"{"ts":"2016-07-01T00:00:00.250+02:00","values":[1e-3,2E+2,-0.0],"site":{"a":[1,{"b":null}]}}"#,
    r#"{"stream":"Z\u00fcrich \"7\"","values":[1,2,3],"ts":1.5e12}"#,
    r#"{"stream":"東京","ts":1467331200000,"values":[0,0,0],"note":"NaN \\ Infinity"}"#,
    "{\"stream\":\"a\",\n \"ts\": 1,\t\"values\" : [ 1 , 2 , 3 ] }",
];

#[test]
fn valid_messages_decode() {
    let c = cfg(3);
    for msg in VALID {
        let key = if msg.contains("\"stream\"") {
            None
        } else {
            Some(&b"k"[..])
        };
        assert!(check(&c, key, msg.as_bytes(), None).is_ok(), "{msg}");
    }
}

#[test]
fn truncations_and_mutations_of_valid_messages() {
    let c = cfg(3);
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let noise = b"{}[]\":,0123456789.-+eEtrufalsn \\u\xff\x00NaInfity";
    let mut cases = 0;
    for msg in VALID {
        let b = msg.as_bytes();
        for cut in 0..b.len() {
            let truncated = &b[..cut];
            let r = check(&c, Some(b"k"), truncated, Some(1));
            assert!(
                r.is_err(),
                "truncation {:?} decoded",
                String::from_utf8_lossy(truncated)
            );
            cases += 1;
        }
        for at in 0..b.len() {
            let mut deleted = b.to_vec();
            deleted.remove(at);
            let _ = check(&c, Some(b"k"), &deleted, Some(1));
            for _ in 0..8 {
                let mut m = b.to_vec();
                m[at] = noise[rng.below(noise.len())];
                let _ = check(&c, Some(b"k"), &m, Some(1));
                let mut inserted = b.to_vec();
                inserted.insert(at, noise[rng.below(noise.len())]);
                let _ = check(&c, None, &inserted, None);
            }
            cases += 17;
        }
    }
    assert!(cases > 5_000, "{cases}");
}

#[test]
fn random_bytes_never_panic() {
    let mut rng = Rng(42);
    for width in [1, 3] {
        let c = cfg(width);
        for _ in 0..20_000 {
            let len = rng.below(600);
            let bytes: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
            let key: Option<Vec<u8>> = match rng.below(3) {
                0 => None,
                1 => Some(b"meter".to_vec()),
                _ => Some((0..rng.below(8)).map(|_| rng.next() as u8).collect()),
            };
            let ts = [
                None,
                Some(-1),
                Some(0),
                Some(i64::MAX),
                Some(1_467_331_200_000),
            ][rng.below(5)];
            let _ = check(&c, key.as_deref(), &bytes, ts);
        }
    }
}

#[test]
fn json_shaped_noise_never_panics() {
    let mut rng = Rng(7);
    let tokens: [&str; 30] = [
        "{",
        "}",
        "[",
        "]",
        ",",
        ":",
        "\"stream\"",
        "\"ts\"",
        "\"values\"",
        "\"value\"",
        "\"x\"",
        "\"a\"",
        "\"\"",
        "\"2016-07-01T00:00:00Z\"",
        "\"\\u00e9\"",
        "\"\\ud800\"",
        "0",
        "-1",
        "1.5",
        "1e400",
        "1467331200000",
        "18446744073709551616",
        "true",
        "null",
        "NaN",
        "-Infinity",
        " ",
        "\"\\\"\"",
        "[1,2,3]",
        "[1]",
    ];
    let mut ok = 0;
    for width in [1, 3] {
        let c = cfg(width);
        for _ in 0..50_000 {
            let mut s = String::from("{");
            for _ in 0..rng.below(14) {
                s.push_str(tokens[rng.below(tokens.len())]);
            }
            if rng.below(2) == 0 {
                s.push('}');
            }
            let key = [None, Some(&b"a"[..]), Some(&b""[..])][rng.below(3)];
            ok += usize::from(check(&c, key, s.as_bytes(), Some(5)).is_ok());
        }
    }
    // Some noise is a valid event, so the success path is exercised too.
    assert!(ok > 0);
}

#[test]
fn stream_ids_are_bounded_at_their_limit() {
    let c = cfg(1);
    let at = "s".repeat(c.max_stream_bytes);
    let over = "s".repeat(c.max_stream_bytes + 1);
    let msg = |s: &str| format!(r#"{{"stream":"{s}","ts":1,"value":1}}"#);
    let mut big = cfg(1);
    big.max_bytes = 1 << 20;
    assert_eq!(
        check(&big, None, msg(&at).as_bytes(), None).unwrap().stream,
        at
    );
    let e = check(&big, None, msg(&over).as_bytes(), None).unwrap_err();
    assert_eq!(e.reason.as_str(), "stream_too_long", "{e}");
    // The key alone (no stream field) is bounded too: a 600 KB key is not a stream id.
    let key = vec![b'k'; 600_000];
    let e = check(&big, Some(&key), br#"{"ts":1,"value":1}"#, None).unwrap_err();
    assert_eq!(e.reason.as_str(), "stream_too_long", "{e}");
}

#[test]
fn values_beyond_f32_are_refused() {
    let c = cfg(2);
    let ok = check(
        &c,
        None,
        br#"{"stream":"s","ts":1,"values":[3.4e38,-3.4e38]}"#,
        None,
    );
    assert!(ok.is_ok(), "{ok:?}");
    for v in ["1e39", "-1e39", "3.5e38", "1.7976931348623157e308"] {
        let msg = format!(r#"{{"stream":"s","ts":1,"values":[1,{v}]}}"#);
        let e = check(&c, None, msg.as_bytes(), None).unwrap_err();
        assert_eq!(e.reason.as_str(), "out_of_range", "{v}: {e}");
        assert!(e.detail.contains("[1]"), "names the index: {e}");
    }
}

#[test]
fn event_times_past_the_bound_are_refused() {
    let mut c = cfg(1);
    c.max_ts_ms = 1_000_000;
    let at = check(&c, None, br#"{"stream":"s","ts":1000000,"value":1}"#, None);
    assert_eq!(at.unwrap().ts_ms, 1_000_000);
    let e = check(&c, None, br#"{"stream":"s","ts":1000001,"value":1}"#, None).unwrap_err();
    assert_eq!(e.reason.as_str(), "future_timestamp", "{e}");
    // The Kafka timestamp is bounded the same way.
    let e = check(&c, None, br#"{"stream":"s","value":1}"#, Some(2_000_000)).unwrap_err();
    assert_eq!(e.reason.as_str(), "future_timestamp", "{e}");
}

#[test]
fn the_default_configuration_bounds_the_future_by_a_day() {
    let cfg = recur::config::Config::load(None).unwrap();
    assert_eq!(cfg.events.max_future_ms(), Ok(Some(86_400_000)));
    assert_eq!(cfg.events.max_stream_bytes, 256);
}
