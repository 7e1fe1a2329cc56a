//! Token bucket and limiter semantics, on a fake clock (explicit `Instant`s) and, for the
//! timerfd, on real short times.

use super::*;

const MS: Duration = Duration::from_millis(1);

fn bucket(size: u64, burst: u64, refill_ms: u64, t0: Instant) -> TokenBucket {
    TokenBucket::new_at(size, burst, refill_ms, t0).unwrap()
}

#[test]
fn a_bucket_starts_full_and_refills_at_size_per_refill_time() {
    let t0 = Instant::now();
    let mut b = bucket(1000, 0, 100, t0);
    assert!(b.consume_at(1000, t0), "starts full");
    assert!(!b.consume_at(1, t0), "empty now");
    // 10 ms is a tenth of the refill time: 100 tokens.
    assert!(!b.consume_at(101, t0 + 10 * MS));
    assert!(b.consume_at(100, t0 + 10 * MS));
    // Never more than `size`, however long it waited.
    let later = t0 + 10_000 * MS;
    assert!(b.consume_at(1000, later));
    assert!(!b.consume_at(1, later));
}

#[test]
fn refill_is_exact_over_many_small_steps() {
    let t0 = Instant::now();
    let mut b = bucket(3, 0, 1000, t0);
    assert!(b.consume_at(3, t0));
    // 3 tokens per second, asked 1 at a time every 333.34 ms: no drift after 300 steps.
    let mut t = t0;
    let step = Duration::from_nanos(333_333_334);
    for _ in 0..300 {
        t += step;
        assert!(
            b.consume_at(1, t),
            "a token is back every third of a second"
        );
    }
}

#[test]
fn a_refused_consumption_takes_nothing() {
    let t0 = Instant::now();
    let mut b = bucket(100, 0, 1000, t0);
    assert!(b.consume_at(60, t0));
    assert!(!b.consume_at(50, t0));
    assert!(b.consume_at(40, t0), "the 40 left are still there");
}

#[test]
fn one_time_burst_is_spent_first_and_never_refilled() {
    let t0 = Instant::now();
    let mut b = bucket(100, 500, 1000, t0);
    assert!(b.consume_at(550, t0), "burst 500 + 50 from the bucket");
    assert_eq!(b.one_time_burst(), 0);
    assert_eq!(b.budget(), 50);
    assert!(!b.consume_at(51, t0));
    // A long wait refills the bucket but not the burst.
    assert!(b.consume_at(100, t0 + 60_000 * MS));
    assert!(!b.consume_at(1, t0 + 60_000 * MS));
}

#[test]
fn an_oversize_request_passes_from_a_full_bucket_and_leaves_debt() {
    let t0 = Instant::now();
    let mut b = bucket(100, 0, 1000, t0);
    assert!(b.consume_at(1, t0));
    assert!(!b.consume_at(300, t0), "not from a bucket that is not full");
    assert!(b.consume_at(300, t0 + 10 * MS), "full again after 10 ms");
    // 200 tokens of debt: the next token comes back only after 2 s + 10 ms.
    assert_eq!(b.wait_for(1, t0 + 10 * MS), 2010 * MS);
    assert!(!b.consume_at(1, t0 + 2019 * MS));
    assert!(b.consume_at(1, t0 + 2020 * MS));
}

#[test]
fn wait_for_says_when_tokens_will_fit() {
    let t0 = Instant::now();
    let mut b = bucket(1000, 0, 1000, t0);
    assert!(b.consume_at(1000, t0));
    assert_eq!(b.wait_for(250, t0), 250 * MS);
    assert_eq!(b.wait_for(250, t0 + 100 * MS), 150 * MS);
    assert_eq!(b.wait_for(250, t0 + 300 * MS), Duration::ZERO);
    assert_eq!(
        b.wait_for(5000, t0),
        1000 * MS,
        "oversize waits for a full bucket"
    );
}

#[test]
fn zero_size_or_refill_time_means_no_bucket() {
    assert!(TokenBucket::new(0, 10, 100).is_none());
    assert!(TokenBucket::new(10, 10, 0).is_none());
}

#[test]
fn ops_and_bytes_are_limited_separately_and_taken_together() {
    let t0 = Instant::now();
    let mut l = RateLimiter {
        bandwidth: Some(bucket(4096, 0, 1000, t0)),
        ops: Some(bucket(2, 0, 1000, t0)),
        ..RateLimiter::default()
    };
    assert!(l.consume_at(4096, TokenKind::Bytes, t0));
    assert!(!l.consume_at(1, TokenKind::Bytes, t0));
    assert!(
        l.consume_at(2, TokenKind::Ops, t0),
        "ops untouched by bytes"
    );
    assert!(!l.consume_at(1, TokenKind::Ops, t0));
    l.replenish(1, TokenKind::Ops);
    assert!(l.consume_at(1, TokenKind::Ops, t0));

    // A request that fits the ops but not the bytes takes neither.
    let mut l = RateLimiter::new(
        TokenBucket::new_at(1000, 0, 1000, t0),
        TokenBucket::new_at(10, 0, 1000, t0),
    )
    .unwrap();
    assert!(l.request_at(600, t0));
    assert!(!l.request_at(600, t0));
    assert!(l.is_blocked());
    assert_eq!(
        l.bucket(TokenKind::Ops).unwrap().budget(),
        9,
        "op given back"
    );
}

#[test]
fn an_unlimited_limiter_lets_everything_through_without_a_timer() {
    let mut l = RateLimiter::new(None, None).unwrap();
    assert!(!l.is_limited());
    assert!(l.request(u64::MAX));
    assert!(l.consume(u64::MAX, TokenKind::Ops));
    assert!(l.timer.is_none());
}

#[test]
fn a_blocked_limiter_fires_its_timer_when_tokens_are_back() {
    // Real time: 1000 ops per second, 1 in the bucket.
    let mut l = RateLimiter::new(None, TokenBucket::new(1, 0, 20)).unwrap();
    assert!(l.request(0));
    let start = Instant::now();
    assert!(!l.request(0));
    assert!(l.is_blocked());
    assert!(!l.request(0), "stays blocked until the timer fires");
    let fd = l.timer.as_ref().unwrap().as_raw_fd();
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd, count 1.
    let n = unsafe { libc::poll(&mut pfd, 1, 2000) };
    assert_eq!(n, 1, "timer fired");
    assert!(start.elapsed() >= Duration::from_millis(15));
    assert!(!l.on_timer(fd + 1000), "not our fd");
    assert!(l.on_timer(fd));
    assert!(!l.is_blocked());
    // SAFETY: as above; the expiry was consumed, so the fd is no longer readable.
    let n = unsafe { libc::poll(&mut pfd, 1, 0) };
    assert_eq!(n, 0, "on_timer cleared the readiness");
    assert!(l.request(0));
}

#[test]
fn updating_a_blocked_limiter_wakes_it_to_recheck() {
    let mut l = RateLimiter::new(TokenBucket::new(10, 0, 60_000), None).unwrap();
    assert!(l.request(10));
    assert!(!l.request(10), "a minute away");
    l.update(None, None).unwrap();
    let fd = l.timer.as_ref().unwrap().as_raw_fd();
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd, count 1.
    let n = unsafe { libc::poll(&mut pfd, 1, 1000) };
    assert_eq!(n, 1, "woken at once, not in a minute");
    assert!(l.on_timer(fd));
    assert!(l.request(1_000_000), "no limit any more");
}
