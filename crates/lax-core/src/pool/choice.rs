//! The pool's policies as plain functions: which member takes the next request, and how long
//! a member waits before it is rebuilt.

use std::time::Duration;

/// Which member takes the next request, among `members` members spread over `targets`
/// targets; `state(i)` is member `i`'s target and requests in flight, or `None` while it is
/// broken. `start` turns the choice: the target is the first one in turn from `start` that has
/// a healthy member, and ties among the least busy go round from it too.
///
/// On that target: the first healthy member (in member order) with fewer than `fill` requests
/// in flight, else the least busy one.
pub(super) fn choose(
    members: usize,
    targets: usize,
    start: usize,
    fill: usize,
    state: impl Fn(usize) -> Option<(usize, usize)>,
) -> Option<usize> {
    let target = (0..targets)
        .map(|turn| (start + turn) % targets)
        .find(|&t| (0..members).any(|i| state(i).is_some_and(|(on, _)| on == t)))?;
    let load = |i: usize| match state(i) {
        Some((on, load)) if on == target => Some(load),
        _ => None,
    };
    if let Some(index) = (0..members).find(|&i| load(i).is_some_and(|load| load < fill)) {
        return Some(index);
    }
    let mut best: Option<(usize, usize)> = None;
    for offset in 0..members {
        let index = (start + offset) % members;
        if let Some(load) = load(index)
            && best.is_none_or(|(_, least)| load < least)
        {
            best = Some((index, load));
        }
    }
    best.map(|(index, _)| index)
}

/// The delay a member's next repair starts with, after a connection that lived `lived`: the
/// initial backoff after a connection that stayed up at least `max`, else double the last one
/// (a peer that ends every connection at once gets reconnected ever more slowly).
pub(super) fn next_repair_delay(
    last: Duration,
    lived: Option<Duration>,
    initial: Duration,
    max: Duration,
) -> Duration {
    match lived {
        Some(lived) if lived >= max => initial,
        _ => last.saturating_mul(2).clamp(initial, max),
    }
}
