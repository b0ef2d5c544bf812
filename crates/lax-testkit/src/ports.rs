//! Choosing free loopback TCP ports.
//!
//! Ports are picked at random *below* the kernel's ephemeral range
//! (`/proc/sys/net/ipv4/ip_local_port_range`), checked by binding `127.0.0.1:<port>`, and
//! released again. Outgoing connections (every NATS client of every test) take their local
//! ports from the ephemeral range, so they cannot grab a port that a stopped server is about to
//! take back on `restart()`. When the range cannot be read or leaves too little room, the
//! kernel picks (`bind 127.0.0.1:0`). Either way a port can still be taken by someone else
//! between the check and the server's bind; the start functions retry those collisions with
//! fresh ports.

use std::{
    collections::{HashSet, hash_map::RandomState},
    hash::{BuildHasher as _, Hasher as _},
    io,
    net::{Ipv4Addr, TcpListener},
    sync::atomic::{AtomicU64, Ordering},
};

const LOWEST: u16 = 10_000;

/// Returns `count` distinct ports that were free on 127.0.0.1 a moment ago.
pub(crate) fn free_ports(count: usize) -> io::Result<Vec<u16>> {
    let mut held = Vec::with_capacity(count);
    let mut ports = Vec::with_capacity(count);
    let mut seen = HashSet::new();
    let range = below_ephemeral_range();
    let mut attempts = 0;
    while ports.len() < count {
        attempts += 1;
        let candidate = match range {
            Some((lo, hi)) if attempts < 1_000 => lo + (random() % u64::from(hi - lo)) as u16,
            _ => 0,
        };
        if candidate != 0 && !seen.insert(candidate) {
            continue;
        }
        match TcpListener::bind((Ipv4Addr::LOCALHOST, candidate)) {
            Ok(listener) => {
                let port = listener.local_addr()?.port();
                if candidate == 0 && !seen.insert(port) {
                    continue;
                }
                ports.push(port);
                // Held until all are chosen, so the kernel cannot hand out one port twice.
                held.push(listener);
            }
            Err(e) if candidate == 0 => return Err(e),
            Err(_) => {}
        }
    }
    drop(held);
    Ok(ports)
}

/// `[LOWEST, start of the ephemeral range)`, when that leaves room.
fn below_ephemeral_range() -> Option<(u16, u16)> {
    let text = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").ok()?;
    let low: u16 = text.split_whitespace().next()?.parse().ok()?;
    (low > LOWEST + 1_000).then_some((LOWEST, low))
}

fn random() -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    hasher.write_u32(std::process::id());
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default(),
    );
    hasher.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_distinct_and_bindable() {
        let ports = free_ports(9).unwrap();
        let unique: HashSet<_> = ports.iter().collect();
        assert_eq!(unique.len(), 9);
        for port in ports {
            assert_ne!(port, 0);
            TcpListener::bind((Ipv4Addr::LOCALHOST, port)).unwrap();
        }
    }
}
