//! Loads `relay.bpf.c` (compiled by build.rs), attaches it in native XDP mode, and keeps its
//! maps: `channels` and `peers` say which ChannelData may be relayed in the kernel and until
//! when; `relay_counters` and `totals` count what was. The layouts below mirror the C structs
//! byte for byte (addresses as 16 bytes, IPv4 mapped into IPv6; ports and channel numbers in
//! network byte order; padding explicit and zero).

use std::io;
use std::net::{IpAddr, SocketAddr};

use aya::maps::{HashMap, MapData, MapError, PerCpuArray, PerCpuHashMap};
use aya::programs::{ProgramError, Xdp, XdpMode};
use aya::{Ebpf, EbpfLoader};

/// The compiled program, aligned as the ELF parser wants it.
static PROGRAM: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/relay.bpf.o"));

/// One channel as the kernel relays it both ways: ChannelData from `client` to `server` on
/// `channel` goes to `peer` from `relay`, and datagrams from `peer` to `relay` go to `client`
/// from `server` as ChannelData on `channel`, until `expires_ns` ([`monotonic_ns`]'s clock):
/// the earlier of the channel's and the permission's end.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChannelRoute {
    pub client: SocketAddr,
    pub server: SocketAddr,
    pub channel: u16,
    pub peer: SocketAddr,
    pub relay: SocketAddr,
    pub expires_ns: u64,
}

/// What the kernel relayed: packets, and application data bytes (the ChannelData payload,
/// the same bytes turnd's userspace metrics count).
#[derive(Default, Clone, Copy, Debug, PartialEq, Eq)]
pub struct XdpCounters {
    pub packets_to_peer: u64,
    pub bytes_to_peer: u64,
    pub packets_to_client: u64,
    pub bytes_to_client: u64,
}

impl std::ops::AddAssign for XdpCounters {
    fn add_assign(&mut self, o: XdpCounters) {
        self.packets_to_peer += o.packets_to_peer;
        self.bytes_to_peer += o.bytes_to_peer;
        self.packets_to_client += o.packets_to_client;
        self.bytes_to_client += o.bytes_to_client;
    }
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct ChanKey {
    client_ip: [u8; 16],
    server_ip: [u8; 16],
    client_port: u16,
    server_port: u16,
    channel: u16,
    pad: u16,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct ChanVal {
    peer_ip: [u8; 16],
    relay_ip: [u8; 16],
    peer_port: u16,
    relay_port: u16,
    pad: u32,
    expires_ns: u64,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct PeerKey {
    peer_ip: [u8; 16],
    relay_ip: [u8; 16],
    peer_port: u16,
    relay_port: u16,
    pad: u32,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct PeerVal {
    client_ip: [u8; 16],
    server_ip: [u8; 16],
    client_port: u16,
    server_port: u16,
    channel: u16,
    pad: u16,
    expires_ns: u64,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct RelayKey {
    relay_ip: [u8; 16],
    relay_port: u16,
    pad: u16,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct Counters {
    packets_to_peer: u64,
    bytes_to_peer: u64,
    packets_to_client: u64,
    bytes_to_client: u64,
}

// SAFETY: plain #[repr(C)] structs of integers and byte arrays with every padding byte an
// explicit field, so any bit pattern is valid and no byte is uninitialised.
unsafe impl aya::Pod for ChanKey {}
unsafe impl aya::Pod for ChanVal {}
unsafe impl aya::Pod for PeerKey {}
unsafe impl aya::Pod for PeerVal {}
unsafe impl aya::Pod for RelayKey {}
unsafe impl aya::Pod for Counters {}

// The C side's sizes (a mismatch would make every lookup miss, silently).
const _: () = assert!(std::mem::size_of::<ChanKey>() == 40);
const _: () = assert!(std::mem::size_of::<ChanVal>() == 48);
const _: () = assert!(std::mem::size_of::<PeerKey>() == 40);
const _: () = assert!(std::mem::size_of::<PeerVal>() == 48);
const _: () = assert!(std::mem::size_of::<RelayKey>() == 20);
const _: () = assert!(std::mem::size_of::<Counters>() == 32);

/// An address as the maps hold it: 16 bytes, IPv4 as ::ffff:a.b.c.d.
fn ip16(ip: IpAddr) -> [u8; 16] {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        IpAddr::V6(v6) => v6.octets(),
    }
}

/// A port or channel number as the maps hold it: the bytes in network order.
fn be(n: u16) -> u16 {
    n.to_be()
}

fn relay_key(relay: SocketAddr) -> RelayKey {
    RelayKey {
        relay_ip: ip16(relay.ip()),
        relay_port: be(relay.port()),
        pad: 0,
    }
}

impl From<Counters> for XdpCounters {
    fn from(c: Counters) -> XdpCounters {
        XdpCounters {
            packets_to_peer: c.packets_to_peer,
            bytes_to_peer: c.bytes_to_peer,
            packets_to_client: c.packets_to_client,
            bytes_to_client: c.bytes_to_client,
        }
    }
}

/// The XDP program, attached, and its maps. Dropping it detaches the program from every
/// interface and frees the maps.
pub struct XdpRelay {
    channels: HashMap<MapData, ChanKey, ChanVal>,
    peers: HashMap<MapData, PeerKey, PeerVal>,
    relay_counters: PerCpuHashMap<MapData, RelayKey, Counters>,
    totals: PerCpuArray<MapData, Counters>,
    links: Vec<aya::programs::xdp::XdpLinkId>,
    ebpf: Ebpf,
}

/// The program's name in the object (its C function).
const PROGRAM_NAME: &str = "turnd_relay";

impl XdpRelay {
    /// Loads the program and attaches it in native (driver) mode to every interface; any
    /// failure -> Err with a one-line reason a operator understands (missing CAP_BPF /
    /// CAP_NET_ADMIN, no such interface, driver without native XDP, kernel too old).
    pub fn attach(interfaces: &[String]) -> Result<XdpRelay, String> {
        if interfaces.is_empty() {
            return Err("no interface to attach the XDP program to".into());
        }
        // Checked first: a typo in the configuration is the likeliest mistake, and naming it
        // needs no privilege.
        for name in interfaces {
            if if_index(name).is_none() {
                return Err(format!("interface {name} does not exist"));
            }
        }
        let mut ebpf = EbpfLoader::new()
            .load(PROGRAM)
            .map_err(|e| load_reason(&e))?;
        let program: &mut Xdp = ebpf
            .program_mut(PROGRAM_NAME)
            .ok_or("the embedded object has no XDP program turnd_relay")?
            .try_into()
            .map_err(|e: ProgramError| format!("the embedded program is not XDP: {e}"))?;
        program.load().map_err(|e| program_reason(&e))?;
        let mut links = Vec::new();
        for name in interfaces {
            let link = program
                .attach(name, XdpMode::Driver)
                .map_err(|e| attach_reason(name, &e))?;
            links.push(link);
        }
        let channels = take(&mut ebpf, "channels")?;
        let peers = take(&mut ebpf, "peers")?;
        let relay_counters = take(&mut ebpf, "relay_counters")?;
        let totals = take(&mut ebpf, "totals")?;
        Ok(XdpRelay {
            channels,
            peers,
            relay_counters,
            totals,
            links,
            ebpf,
        })
    }

    /// Lets the kernel relay `r` both ways (replacing any entry for the same client channel
    /// and the same peer and relayed address).
    pub fn install(&mut self, r: &ChannelRoute) -> io::Result<()> {
        let (ck, cv, pk, pv) = entries(r);
        self.channels.insert(ck, cv, 0).map_err(map_io)?;
        self.peers.insert(pk, pv, 0).map_err(map_io)
    }

    /// Stops the kernel relaying `r` (both directions); entries already gone are fine.
    pub fn remove(&mut self, r: &ChannelRoute) -> io::Result<()> {
        let (ck, _, pk, _) = entries(r);
        let a = gone_is_ok(self.channels.remove(&ck));
        let b = gone_is_ok(self.peers.remove(&pk));
        a.and(b)
    }

    /// What the kernel relayed through `relay`, summed over CPUs (zero if nothing).
    pub fn relay_counters(&self, relay: SocketAddr) -> XdpCounters {
        match self.relay_counters.get(&relay_key(relay), 0) {
            Ok(per_cpu) => sum(per_cpu.iter().copied()),
            Err(_) => XdpCounters::default(),
        }
    }

    /// [`XdpRelay::relay_counters`], then deletes them (the relayed address is gone, or reused
    /// by another allocation that must start from zero).
    pub fn forget_relay(&mut self, relay: SocketAddr) -> XdpCounters {
        let counted = self.relay_counters(relay);
        let _ = self.relay_counters.remove(&relay_key(relay));
        counted
    }

    /// Everything the kernel relayed, summed over CPUs.
    pub fn totals(&self) -> XdpCounters {
        match self.totals.get(&0, 0) {
            Ok(per_cpu) => sum(per_cpu.iter().copied()),
            Err(_) => XdpCounters::default(),
        }
    }
}

impl Drop for XdpRelay {
    fn drop(&mut self) {
        if let Some(p) = self.ebpf.program_mut(PROGRAM_NAME) {
            if let Ok(xdp) = <&mut Xdp>::try_from(p) {
                for link in self.links.drain(..) {
                    let _ = xdp.detach(link);
                }
            }
        }
    }
}

/// `clock_gettime(CLOCK_MONOTONIC)` in nanoseconds: the clock of the program's
/// `bpf_ktime_get_ns`, so [`ChannelRoute::expires_ns`] is `monotonic_ns() + lifetime`.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the timespec it is given; CLOCK_MONOTONIC always exists.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

fn entries(r: &ChannelRoute) -> (ChanKey, ChanVal, PeerKey, PeerVal) {
    let ck = ChanKey {
        client_ip: ip16(r.client.ip()),
        server_ip: ip16(r.server.ip()),
        client_port: be(r.client.port()),
        server_port: be(r.server.port()),
        channel: be(r.channel),
        pad: 0,
    };
    let cv = ChanVal {
        peer_ip: ip16(r.peer.ip()),
        relay_ip: ip16(r.relay.ip()),
        peer_port: be(r.peer.port()),
        relay_port: be(r.relay.port()),
        pad: 0,
        expires_ns: r.expires_ns,
    };
    let pk = PeerKey {
        peer_ip: cv.peer_ip,
        relay_ip: cv.relay_ip,
        peer_port: cv.peer_port,
        relay_port: cv.relay_port,
        pad: 0,
    };
    let pv = PeerVal {
        client_ip: ck.client_ip,
        server_ip: ck.server_ip,
        client_port: ck.client_port,
        server_port: ck.server_port,
        channel: ck.channel,
        pad: 0,
        expires_ns: r.expires_ns,
    };
    (ck, cv, pk, pv)
}

fn sum(per_cpu: impl Iterator<Item = Counters>) -> XdpCounters {
    let mut total = XdpCounters::default();
    for c in per_cpu {
        total += c.into();
    }
    total
}

fn take<M>(ebpf: &mut Ebpf, name: &str) -> Result<M, String>
where
    M: TryFrom<aya::maps::Map, Error = MapError>,
{
    let map = ebpf
        .take_map(name)
        .ok_or_else(|| format!("the embedded object has no map {name}"))?;
    M::try_from(map).map_err(|e| format!("map {name} is not what the loader expects: {e}"))
}

fn if_index(name: &str) -> Option<u32> {
    let c = std::ffi::CString::new(name).ok()?;
    // SAFETY: if_nametoindex reads a NUL-terminated string and returns 0 when there is none.
    let i = unsafe { libc::if_nametoindex(c.as_ptr()) };
    (i != 0).then_some(i)
}

/// The first OS error in an error's chain of causes.
fn os_error<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a io::Error> {
    let mut cur: Option<&'a (dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(io) = err.downcast_ref::<io::Error>() {
            if io.raw_os_error().is_some() {
                return Some(io);
            }
        }
        cur = err.source();
    }
    None
}

/// The one-line reason for an OS error that every step can meet.
fn common_reason(io: &io::Error) -> Option<String> {
    match io.raw_os_error()? {
        libc::EPERM | libc::EACCES => {
            Some(format!("no CAP_BPF/CAP_NET_ADMIN ({})", strip_os_error(io)))
        }
        libc::ENOSYS => Some(format!(
            "kernel too old: no bpf() system call ({})",
            strip_os_error(io)
        )),
        _ => None,
    }
}

/// "Operation not permitted (os error 1)" -> "operation not permitted".
fn strip_os_error(io: &io::Error) -> String {
    let s = io.to_string();
    let s = s.split(" (os error").next().unwrap_or(&s).to_string();
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_lowercase().chain(c).collect(),
        None => s,
    }
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn load_reason(e: &aya::EbpfError) -> String {
    if let Some(r) = os_error(e).and_then(common_reason) {
        return r;
    }
    one_line(&format!(
        "cannot load the XDP program's maps (kernel too old?): {e}{}",
        os_error(e).map(|io| format!(": {io}")).unwrap_or_default()
    ))
}

fn program_reason(e: &ProgramError) -> String {
    if let Some(r) = os_error(e).and_then(common_reason) {
        return r;
    }
    if let ProgramError::LoadError {
        io_error,
        verifier_log,
    } = e
    {
        // The verifier's verdict is its last meaningful line.
        let log = verifier_log.to_string();
        let verdict = log
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty() && !l.starts_with("processed ") && !l.starts_with("--"))
            .unwrap_or("");
        return one_line(&format!(
            "the kernel refused the XDP program (kernel too old?): {}: {verdict}",
            strip_os_error(io_error)
        ));
    }
    one_line(&format!("cannot load the XDP program: {e}"))
}

fn attach_reason(iface: &str, e: &ProgramError) -> String {
    if let ProgramError::UnknownInterface { name } = e {
        return format!("interface {name} does not exist");
    }
    let Some(io) = os_error(e) else {
        return one_line(&format!("cannot attach XDP to {iface}: {e}"));
    };
    if let Some(r) = common_reason(io) {
        return r;
    }
    match io.raw_os_error() {
        Some(libc::EOPNOTSUPP) | Some(libc::EINVAL) => format!(
            "driver of {iface} has no native XDP: {}",
            strip_os_error(io)
        ),
        Some(libc::EBUSY) | Some(libc::EEXIST) => format!(
            "another XDP program is already attached to {iface} ({})",
            strip_os_error(io)
        ),
        _ => one_line(&format!(
            "cannot attach XDP to {iface}: {}",
            strip_os_error(io)
        )),
    }
}

fn map_io(e: MapError) -> io::Error {
    match os_error(&e) {
        Some(io) => io::Error::from_raw_os_error(io.raw_os_error().unwrap_or(libc::EIO)),
        None => io::Error::other(e.to_string()),
    }
}

fn gone_is_ok(r: Result<(), MapError>) -> io::Result<()> {
    match r {
        Ok(()) | Err(MapError::KeyNotFound) | Err(MapError::ElementNotFound) => Ok(()),
        Err(e) => match os_error(&e).and_then(|io| io.raw_os_error()) {
            Some(libc::ENOENT) => Ok(()),
            _ => Err(map_io(e)),
        },
    }
}
