//! IANA's IPv4 and IPv6 Special-Purpose Address Registries, read from the
//! CSV files IANA publishes (kept beside this file, compiled in): which
//! blocks are not globally reachable.
//!
//! The files are IANA's own format, footnote marks, several blocks in one
//! cell and line breaks in quoted cells included, so updating them is a
//! matter of replacing them with the published
//! `iana-ipv4-special-registry.csv` and `iana-ipv6-special-registry.csv`
//! (<https://www.iana.org/assignments/iana-ipv4-special-registry/>,
//! <https://www.iana.org/assignments/iana-ipv6-special-registry/>); a unit
//! test checks every row parses. Pure: parsing and lookup, no I/O.

use std::net::IpAddr;
use std::sync::LazyLock;

/// One block of a registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Block {
    /// First address (IPv4 addresses as IPv4-mapped IPv6, so one type holds
    /// both).
    network: u128,
    /// Prefix length within 128 bits.
    bits: u32,
    /// Whether the block is for IPv4.
    v4: bool,
    /// The registry's name, lower-cased, without a trailing "address"
    /// (`private-use`, `loopback`, `shared address space`).
    pub name: String,
    /// The registry's "Globally Reachable" is `True`.
    pub globally_reachable: bool,
}

impl Block {
    /// The block's first address.
    pub fn first(&self) -> IpAddr {
        if self.v4 {
            IpAddr::V4(std::net::Ipv4Addr::from(self.network as u32))
        } else {
            IpAddr::V6(std::net::Ipv6Addr::from(self.network))
        }
    }

    fn contains(&self, ip: IpAddr) -> bool {
        let (addr, v4) = as_u128(ip);
        if v4 != self.v4 {
            return false;
        }
        let mask = if self.bits == 0 {
            0
        } else {
            u128::MAX << (128 - self.bits)
        };
        addr & mask == self.network & mask
    }
}

/// An address as 128 bits (IPv4 in the low 32 bits, mapped) and whether it
/// is IPv4.
fn as_u128(ip: IpAddr) -> (u128, bool) {
    match ip {
        IpAddr::V4(v4) => (u128::from(u32::from(v4)) | 0xffff << 32, true),
        IpAddr::V6(v6) => (u128::from(v6), false),
    }
}

const IPV4: &str = include_str!("iana-ipv4-special-registry.csv");
const IPV6: &str = include_str!("iana-ipv6-special-registry.csv");

/// Every block of both registries, most specific first.
static BLOCKS: LazyLock<Vec<Block>> = LazyLock::new(|| {
    let mut blocks: Vec<Block> = parse(IPV4)
        .into_iter()
        .chain(parse(IPV6))
        .filter_map(Result::ok)
        .collect();
    blocks.sort_by_key(|b| std::cmp::Reverse(b.bits));
    blocks
});

/// The most specific registry block holding `ip`, if any.
pub fn block_of(ip: IpAddr) -> Option<&'static Block> {
    BLOCKS.iter().find(|b| b.contains(ip))
}

/// The rows of a registry file: each block, or why a row could not be read.
pub fn parse(text: &str) -> Vec<Result<Block, String>> {
    let mut out = Vec::new();
    for (i, row) in csv_rows(text).into_iter().enumerate().skip(1) {
        let cell = |n: usize| row.get(n).map(|c| strip_footnotes(c)).unwrap_or_default();
        let name = cell(1).to_lowercase();
        let name = name.strip_suffix(" address").unwrap_or(&name).to_string();
        let reachable = cell(8) == "True";
        let blocks = cell(0);
        for block in blocks.split(',').map(str::trim).filter(|b| !b.is_empty()) {
            out.push(
                parse_block(block, &name, reachable).map_err(|e| format!("row {}: {e}", i + 1)),
            );
        }
    }
    out
}

fn parse_block(block: &str, name: &str, globally_reachable: bool) -> Result<Block, String> {
    let (addr, bits) = block
        .split_once('/')
        .ok_or_else(|| format!("`{block}` has no prefix length"))?;
    let ip: IpAddr = addr
        .parse()
        .map_err(|_| format!("`{addr}` is not an address"))?;
    let bits: u32 = bits
        .parse()
        .map_err(|_| format!("`{bits}` is not a prefix length"))?;
    let (network, v4) = as_u128(ip);
    let width = if v4 { 32 } else { 128 };
    if bits > width {
        return Err(format!("prefix /{bits} is longer than the address"));
    }
    Ok(Block {
        network,
        bits: if v4 { 96 + bits } else { bits },
        v4,
        name: name.to_string(),
        globally_reachable,
    })
}

/// `"False [1]"` → `False`; `"192.0.0.0/24 [2]"` → `192.0.0.0/24`.
fn strip_footnotes(cell: &str) -> String {
    let mut out = String::with_capacity(cell.len());
    let mut depth = 0;
    for c in cell.chars() {
        match c {
            '[' if cell.contains(']') => depth += 1,
            ']' if depth > 0 => depth -= 1,
            _ if depth == 0 => out.push(c),
            _ => {}
        }
    }
    out.trim().to_string()
}

/// RFC 4180 rows: quoted cells may hold commas, doubled quotes and line
/// breaks.
fn csv_rows(text: &str) -> Vec<Vec<String>> {
    let mut rows = Vec::new();
    let mut row = Vec::new();
    let mut cell = String::new();
    let mut quoted = false;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, quoted) {
            ('"', true) if chars.peek() == Some(&'"') => {
                chars.next();
                cell.push('"');
            }
            ('"', true) => quoted = false,
            ('"', false) if cell.is_empty() => quoted = true,
            (',', false) => row.push(std::mem::take(&mut cell)),
            ('\r', false) => {}
            ('\n', false) => {
                row.push(std::mem::take(&mut cell));
                if row.iter().any(|c| !c.is_empty()) {
                    rows.push(std::mem::take(&mut row));
                } else {
                    row.clear();
                }
            }
            (c, _) => cell.push(c),
        }
    }
    if !cell.is_empty() || !row.is_empty() {
        row.push(cell);
        rows.push(row);
    }
    rows
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_row_of_both_registries_is_read() {
        for (file, text, blocks) in [("ipv4", IPV4, 25), ("ipv6", IPV6, 25)] {
            let parsed = parse(text);
            let errors: Vec<&String> = parsed.iter().filter_map(|r| r.as_ref().err()).collect();
            assert!(errors.is_empty(), "{file}: {errors:?}");
            assert_eq!(parsed.len(), blocks, "{file}: blocks read");
        }
    }

    #[test]
    fn quoted_cells_footnotes_and_shared_rows_are_understood() {
        let text = "Address Block,Name,RFC,Allocation Date,Termination Date,Source,Destination,Forwardable,Globally Reachable,Reserved-by-Protocol\n\
                    \"192.0.0.170/32, 192.0.0.171/32\",\"A \"\"quoted\"\" name\",\"[RFC1]\n[RFC2]\",2013-02,N/A,False,False,False,False [4],True\n\
                    2002::/16 [3],6to4,[RFC3056],2001-02,N/A,True,True,True,N/A [3],False\n";
        let blocks: Vec<Block> = parse(text).into_iter().map(Result::unwrap).collect();
        assert_eq!(blocks.len(), 3);
        assert_eq!(blocks[0].name, "a \"quoted\" name");
        assert!(!blocks[1].globally_reachable);
        assert!(blocks[1].contains("192.0.0.171".parse().unwrap()));
        assert_eq!(blocks[2].name, "6to4");
        assert!(!blocks[2].globally_reachable, "N/A is not True");
        assert!(blocks[2].contains("2002:7f00:1::".parse().unwrap()));
        assert!(!blocks[2].contains("2003::1".parse().unwrap()));
    }

    #[test]
    fn the_most_specific_block_answers() {
        let pcp = block_of("192.0.0.9".parse().unwrap()).unwrap();
        assert_eq!(pcp.name, "port control protocol anycast");
        assert!(pcp.globally_reachable);
        let dummy = block_of("192.0.0.8".parse().unwrap()).unwrap();
        assert_eq!(dummy.name, "ipv4 dummy");
        assert!(!dummy.globally_reachable);
        assert!(block_of("8.8.8.8".parse().unwrap()).is_none());
        assert!(
            block_of("::ffff:10.0.0.1".parse().unwrap()).is_some_and(|b| b.name == "ipv4-mapped"),
            "an IPv4-mapped IPv6 address is in the IPv6 registry, not the IPv4 one"
        );
    }
}
