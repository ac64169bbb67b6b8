// SPDX-License-Identifier: Apache-2.0 OR GPL-2.0-only
//
// turnd's XDP fast path: relays UDP ChannelData (RFC 8656 §12) between a client and a peer
// without entering the kernel's UDP stack. turnd-proto decides which channels may relay; the
// shell writes that decision into the maps below and this program only executes it. Anything
// it is not sure about -- a miss, an expired entry, an odd header, a route it cannot resolve --
// is XDP_PASS, unchanged, so the sockets see exactly what they would without the fast path.
//
// The map layouts are a contract with src/fast_path/xdp.rs (docs: notes/xdp-spec.md): all
// addresses 16 bytes (IPv4 as ::ffff:a.b.c.d), ports and channel numbers in network byte order,
// explicit zeroed padding so a key hashes the same from Rust and from C.
//
// Verifier notes (kernel 6.18). turnd may hold only CAP_BPF + CAP_NET_ADMIN, and without
// CAP_PERFMON the verifier refuses any packet pointer plus a non-constant offset ("pointer
// arithmetic with it prohibited for !root") and pointer - pointer. So headers are reached only
// at constant offsets (one branch per family), bytes at offsets known only at run time (the
// ChannelData header and padding) go through bpf_xdp_load_bytes/bpf_xdp_store_bytes, and the
// frame length comes from bpf_xdp_get_buff_len. Every packet pointer is re-derived and
// re-checked after bpf_xdp_adjust_head/tail. to_peer, to_client and count are separate
// BPF functions: inlined into one, their stack frames add up past the 512-byte limit.

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#define AF_INET 2
#define AF_INET6 10
#define ETH_P_IP 0x0800
#define ETH_P_IPV6 0x86DD
#define IPPROTO_UDP 17
#define ETH_HLEN 14
#define IP4_HLEN 20
#define IP6_HLEN 40
#define UDP_HLEN 8
// RFC 8656 §12.4: the ChannelData header is a 2-byte channel number and a 2-byte length.
#define CD_HLEN 4
// RFC 8656 §12.5: over UDP the application data may be followed by up to 3 bytes of padding
// to a multiple of 4. turnd-proto's channel_data::parse ignores any trailing bytes; those past
// 3 cannot be removed from the checksum here at a bounded cost, so they go to userspace, which
// relays them the same way.
#define CD_MAX_PADDING 3
#define NEW_TTL 64

struct chan_key {
	__u8 client_ip[16];
	__u8 server_ip[16];
	__be16 client_port;
	__be16 server_port;
	__be16 channel;
	__u16 pad;
};

struct chan_val {
	__u8 peer_ip[16];
	__u8 relay_ip[16];
	__be16 peer_port;
	__be16 relay_port;
	__u32 pad;
	__u64 expires_ns;
};

struct peer_key {
	__u8 peer_ip[16];
	__u8 relay_ip[16];
	__be16 peer_port;
	__be16 relay_port;
	__u32 pad;
};

struct peer_val {
	__u8 client_ip[16];
	__u8 server_ip[16];
	__be16 client_port;
	__be16 server_port;
	__be16 channel;
	__u16 pad;
	__u64 expires_ns;
};

struct relay_key {
	__u8 relay_ip[16];
	__be16 relay_port;
	__u16 pad;
};

struct counters {
	__u64 packets_to_peer;
	__u64 bytes_to_peer;
	__u64 packets_to_client;
	__u64 bytes_to_client;
};

// Entries are allocated when userspace installs them (no preallocation), so a large
// max_entries costs nothing until channels exist.
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 262144);
	__type(key, struct chan_key);
	__type(value, struct chan_val);
} channels SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 262144);
	__type(key, struct peer_key);
	__type(value, struct peer_val);
} peers SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 65536);
	__type(key, struct relay_key);
	__type(value, struct counters);
} relay_counters SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct counters);
} totals SEC(".maps");

// Wire headers, declared here so the object needs no uapi networking headers.
struct eth_hdr {
	__u8 dst[6];
	__u8 src[6];
	__be16 proto;
};

struct ip4_hdr {
	__u8 ver_ihl;
	__u8 tos;
	__be16 tot_len;
	__be16 id;
	__be16 frag_off;
	__u8 ttl;
	__u8 protocol;
	__u16 check;
	__u8 saddr[4];
	__u8 daddr[4];
};

struct ip6_hdr {
	__be32 ver_tc_flow;
	__be16 payload_len;
	__u8 nexthdr;
	__u8 hop_limit;
	__u8 saddr[16];
	__u8 daddr[16];
};

struct udp_hdr {
	__be16 source;
	__be16 dest;
	__be16 len;
	__u16 check;
};

// What the parser found in a frame: a UDP datagram over IPv4 or IPv6, addresses mapped.
struct flow {
	__u8 src[16];
	__u8 dst[16];
	__be16 sport;
	__be16 dport;
	__u16 csum;    // the UDP checksum as received (network order)
	__u16 udp_len; // UDP header + payload (host order)
	__u32 l4_off;  // offset of the UDP header in the frame
	__u8 family;   // AF_INET or AF_INET6
};

static __always_inline int is_v4_mapped(const __u8 *a)
{
	for (int i = 0; i < 10; i++)
		if (a[i])
			return 0;
	return a[10] == 0xff && a[11] == 0xff;
}

static __always_inline void map_v4(__u8 *dst16, const __u8 *v4)
{
	__builtin_memset(dst16, 0, 10);
	dst16[10] = 0xff;
	dst16[11] = 0xff;
	dst16[12] = v4[0];
	dst16[13] = v4[1];
	dst16[14] = v4[2];
	dst16[15] = v4[3];
}

// One's-complement arithmetic for the UDP checksum (RFC 1071), done in host order on 16-bit
// words so that byte positions are explicit; RFC 1624 eq. 3 for the incremental update:
// HC' = ~(~HC + ~m + m').
static __always_inline __u32 csum_add(__u32 acc, __u16 word) { return acc + word; }
static __always_inline __u32 csum_sub(__u32 acc, __u16 word) { return acc + (__u16)~word; }

static __always_inline __u32 csum_addr(__u32 acc, const __u8 *a16, int family, int sub)
{
	// An IPv4 pseudo-header carries the 4-byte address only.
	int from = family == AF_INET ? 12 : 0;
	for (int i = 0; i < 16; i += 2) {
		if (i < from)
			continue;
		__u16 w = ((__u16)a16[i] << 8) | a16[i + 1];
		acc = sub ? csum_sub(acc, w) : csum_add(acc, w);
	}
	return acc;
}

static __always_inline __u16 csum_fold(__u32 acc)
{
	acc = (acc & 0xffff) + (acc >> 16);
	acc = (acc & 0xffff) + (acc >> 16);
	acc = (acc & 0xffff) + (acc >> 16);
	return (__u16)acc;
}

// The UDP pseudo-header and header words that change when a datagram is readdressed:
// addresses, the length (it appears twice: pseudo-header and header) and the ports. The
// protocol word (17) is the same in the IPv4 and the IPv6 pseudo-header and cancels out.
static __always_inline __u32 csum_endpoints(__u32 acc, const __u8 *src, const __u8 *dst,
					    __be16 sport, __be16 dport, __u16 udp_len,
					    int family, int sub)
{
	acc = csum_addr(acc, src, family, sub);
	acc = csum_addr(acc, dst, family, sub);
	if (sub)
		return csum_sub(csum_sub(csum_sub(csum_sub(acc, udp_len), udp_len),
					 bpf_ntohs(sport)), bpf_ntohs(dport));
	return acc + udp_len + udp_len + bpf_ntohs(sport) + bpf_ntohs(dport);
}

static __always_inline __u16 ip4_checksum(const struct ip4_hdr *ip)
{
	const __u16 *w = (const __u16 *)ip;
	__u32 acc = 0;
	for (int i = 0; i < IP4_HLEN / 2; i++)
		acc += w[i];
	return ~csum_fold(acc);
}

// Parses Ethernet + IPv4 (no options, not a fragment) or IPv6 (UDP as the first next header)
// + UDP whose lengths agree with each other and fit in the frame. 0 on success.
static __always_inline int parse(struct xdp_md *ctx, struct flow *f)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct eth_hdr *eth = data;
	if ((void *)(eth + 1) > data_end)
		return -1;
	// Broadcast and multicast frames are not addressed to this host alone.
	if (eth->dst[0] & 1)
		return -1;
	if (eth->proto == bpf_htons(ETH_P_IP)) {
		struct ip4_hdr *ip = (void *)(eth + 1);
		struct udp_hdr *udp = (void *)(ip + 1);
		if ((void *)(udp + 1) > data_end)
			return -1;
		if (ip->ver_ihl != 0x45 || ip->protocol != IPPROTO_UDP)
			return -1;
		// More-fragments flag or a fragment offset: only whole datagrams.
		if (ip->frag_off & bpf_htons(0x3fff))
			return -1;
		__u16 tot = bpf_ntohs(ip->tot_len);
		__u16 ulen = bpf_ntohs(udp->len);
		if (tot < IP4_HLEN + UDP_HLEN || ulen != tot - IP4_HLEN)
			return -1;
		if (ETH_HLEN + (__u32)tot > bpf_xdp_get_buff_len(ctx))
			return -1;
		map_v4(f->src, ip->saddr);
		map_v4(f->dst, ip->daddr);
		f->sport = udp->source;
		f->dport = udp->dest;
		f->csum = udp->check;
		f->udp_len = ulen;
		f->l4_off = ETH_HLEN + IP4_HLEN;
		f->family = AF_INET;
		return 0;
	}
	if (eth->proto == bpf_htons(ETH_P_IPV6)) {
		struct ip6_hdr *ip = (void *)(eth + 1);
		struct udp_hdr *udp = (void *)(ip + 1);
		if ((void *)(udp + 1) > data_end)
			return -1;
		if ((ip->ver_tc_flow & bpf_htonl(0xf0000000)) != bpf_htonl(0x60000000))
			return -1;
		if (ip->nexthdr != IPPROTO_UDP)
			return -1;
		__u16 plen = bpf_ntohs(ip->payload_len);
		__u16 ulen = bpf_ntohs(udp->len);
		if (plen < UDP_HLEN || ulen != plen)
			return -1;
		if (ETH_HLEN + IP6_HLEN + (__u32)plen > bpf_xdp_get_buff_len(ctx))
			return -1;
		__builtin_memcpy(f->src, ip->saddr, 16);
		__builtin_memcpy(f->dst, ip->daddr, 16);
		f->sport = udp->source;
		f->dport = udp->dest;
		f->csum = udp->check;
		f->udp_len = ulen;
		f->l4_off = ETH_HLEN + IP6_HLEN;
		f->family = AF_INET6;
		return 0;
	}
	return -1;
}

// Resolves the next hop for the rewritten datagram. 0 with `fib` filled on success; anything
// else (no route, no neighbour entry yet, needs fragmentation) leaves the packet to the stack,
// which sends it and resolves the neighbour for the next one.
static __always_inline void fib_params(struct xdp_md *ctx, struct bpf_fib_lookup *fib,
				       int family, const __u8 *src, const __u8 *dst,
				       __be16 sport, __be16 dport, __u16 l3_len)
{
	__builtin_memset(fib, 0, sizeof(*fib));
	fib->family = family;
	fib->l4_protocol = IPPROTO_UDP;
	fib->sport = sport;
	fib->dport = dport;
	fib->tot_len = l3_len;
	fib->ifindex = ctx->ingress_ifindex;
	if (family == AF_INET) {
		__builtin_memcpy(&fib->ipv4_src, src + 12, 4);
		__builtin_memcpy(&fib->ipv4_dst, dst + 12, 4);
	} else {
		__builtin_memcpy(fib->ipv6_src, src, 16);
		__builtin_memcpy(fib->ipv6_dst, dst, 16);
	}
}

static __always_inline int route(struct xdp_md *ctx, struct bpf_fib_lookup *fib, int family,
				 const __u8 *src, const __u8 *dst, __be16 sport, __be16 dport,
				 __u16 l3_len)
{
	fib_params(ctx, fib, family, src, dst, sport, dport, l3_len);
	long rc = bpf_fib_lookup(ctx, fib, sizeof(*fib), 0);
	// IPv6 lookups fail with BPF_FIB_LKUP_RET_FWD_DISABLED unless forwarding is on for the
	// ingress interface (net.ipv6.conf.IFACE.forwarding=1; on kernel 6.18 also with
	// BPF_FIB_LOOKUP_OUTPUT). IPv4 lookups need no such setting. Such packets pass, and the
	// sockets relay them.
	return rc == BPF_FIB_LKUP_RET_SUCCESS ? 0 : -1;
}

// Writes fresh Ethernet, IP and UDP headers at the start of the (already resized) frame.
// 0 on success.
static __always_inline int write_headers(struct xdp_md *ctx, const struct bpf_fib_lookup *fib,
					 int family, const __u8 *src, const __u8 *dst,
					 __be16 sport, __be16 dport, __u16 udp_len, __u16 csum)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct eth_hdr *eth = data;
	if ((void *)(eth + 1) > data_end)
		return -1;
	__builtin_memcpy(eth->dst, fib->dmac, 6);
	__builtin_memcpy(eth->src, fib->smac, 6);
	struct udp_hdr *udp;
	if (family == AF_INET) {
		struct ip4_hdr *ip = (void *)(eth + 1);
		udp = (void *)(ip + 1);
		if ((void *)(udp + 1) > data_end)
			return -1;
		eth->proto = bpf_htons(ETH_P_IP);
		ip->ver_ihl = 0x45;
		ip->tos = 0;
		ip->tot_len = bpf_htons(IP4_HLEN + udp_len);
		// With DF set the ID carries no meaning (RFC 6864 §4.1).
		ip->id = 0;
		ip->frag_off = bpf_htons(0x4000);
		ip->ttl = NEW_TTL;
		ip->protocol = IPPROTO_UDP;
		ip->check = 0;
		__builtin_memcpy(ip->saddr, src + 12, 4);
		__builtin_memcpy(ip->daddr, dst + 12, 4);
		ip->check = ip4_checksum(ip);
	} else {
		struct ip6_hdr *ip = (void *)(eth + 1);
		udp = (void *)(ip + 1);
		if ((void *)(udp + 1) > data_end)
			return -1;
		eth->proto = bpf_htons(ETH_P_IPV6);
		ip->ver_tc_flow = bpf_htonl(0x60000000);
		ip->payload_len = bpf_htons(udp_len);
		ip->nexthdr = IPPROTO_UDP;
		ip->hop_limit = NEW_TTL;
		__builtin_memcpy(ip->saddr, src, 16);
		__builtin_memcpy(ip->daddr, dst, 16);
	}
	udp->source = sport;
	udp->dest = dport;
	udp->len = bpf_htons(udp_len);
	udp->check = csum;
	return 0;
}

static __noinline void count(const __u8 *relay_ip, __be16 relay_port, int to_peer,
				  __u64 bytes)
{
	struct relay_key rk;
	__builtin_memset(&rk, 0, sizeof(rk));
	__builtin_memcpy(rk.relay_ip, relay_ip, 16);
	rk.relay_port = relay_port;
	struct counters *c = bpf_map_lookup_elem(&relay_counters, &rk);
	if (!c) {
		struct counters zero = {};
		bpf_map_update_elem(&relay_counters, &rk, &zero, BPF_NOEXIST);
		c = bpf_map_lookup_elem(&relay_counters, &rk);
	}
	__u32 idx = 0;
	struct counters *t = bpf_map_lookup_elem(&totals, &idx);
	// Per-CPU values: only this CPU writes them, so plain increments are exact. All four
	// fields are written whichever the direction: a branch here lets clang pick the field by
	// a register offset, which the verifier refuses without CAP_PERFMON.
	__u64 pp = to_peer ? 1 : 0, bp = to_peer ? bytes : 0;
	__u64 pc = to_peer ? 0 : 1, bc = to_peer ? 0 : bytes;
	if (c) {
		c->packets_to_peer += pp;
		c->bytes_to_peer += bp;
		c->packets_to_client += pc;
		c->bytes_to_client += bc;
	}
	if (t) {
		t->packets_to_peer += pp;
		t->bytes_to_peer += bp;
		t->packets_to_client += pc;
		t->bytes_to_client += bc;
	}
}

static __always_inline int transmit(struct xdp_md *ctx, const struct bpf_fib_lookup *fib)
{
	if (fib->ifindex == ctx->ingress_ifindex)
		return XDP_TX;
	return bpf_redirect(fib->ifindex, 0);
}

// Resizes the frame from [old_hdr bytes of headers][body_len bytes][anything after] to
// [new_hdr bytes of headers][body_len bytes]: the body stays where it is in memory.
// 0 on success; RESIZE_UNTOUCHED when it failed before changing anything (the packet can
// still pass), RESIZE_BROKEN when it failed half-way (the frame is no longer what arrived).
#define RESIZE_UNTOUCHED 1
#define RESIZE_BROKEN 2
static __always_inline int resize(struct xdp_md *ctx, __u32 old_hdr, __u32 new_hdr, __u32 body_len)
{
	__u32 have = bpf_xdp_get_buff_len(ctx);
	__u32 want = old_hdr + body_len;
	if (want > have)
		return RESIZE_UNTOUCHED;
	if (bpf_xdp_adjust_head(ctx, (int)old_hdr - (int)new_hdr))
		return RESIZE_UNTOUCHED;
	// Ethernet padding of short frames and ChannelData padding go.
	if (want < have && bpf_xdp_adjust_tail(ctx, -(int)(have - want)))
		return RESIZE_BROKEN;
	return 0;
}

static __always_inline int resize_failed(int rc)
{
	return rc == RESIZE_UNTOUCHED ? XDP_PASS : XDP_DROP;
}

// Client -> peer: RFC 8656 §12.6 -- the ChannelData's application data goes to the peer bound
// to the channel, from the allocation's relayed address, as a plain UDP datagram.
static __noinline int to_peer(struct xdp_md *ctx, const struct flow *f, __u16 channel,
				   __u16 data_len, __u16 pad)
{
	struct chan_key k;
	__builtin_memset(&k, 0, sizeof(k));
	__builtin_memcpy(k.client_ip, f->src, 16);
	__builtin_memcpy(k.server_ip, f->dst, 16);
	k.client_port = f->sport;
	k.server_port = f->dport;
	k.channel = bpf_htons(channel);
	struct chan_val *v = bpf_map_lookup_elem(&channels, &k);
	if (!v)
		return XDP_PASS;
	// Permission and channel lifetimes (RFC 8656 §9, §12): the entry carries the earlier end.
	if (bpf_ktime_get_ns() >= v->expires_ns)
		return XDP_PASS;
	// Userspace replaces an entry rather than editing it in place, and the old one is freed
	// only after an RCU grace period, so *v stays consistent while this program runs.
	const struct chan_val *val = v;
	int out = is_v4_mapped(val->peer_ip) ? AF_INET : AF_INET6;
	if (out != (is_v4_mapped(val->relay_ip) ? AF_INET : AF_INET6))
		return XDP_PASS;
	// IPv4 may leave the checksum out (0); IPv6 may not (RFC 8200 §8.1), and this program
	// does not compute one from scratch. A zero over IPv6 is invalid anyway.
	if (f->csum == 0 && (out == AF_INET6 || f->family == AF_INET6))
		return XDP_PASS;

	__u16 udp_len = UDP_HLEN + data_len;
	__u32 l3_hlen = out == AF_INET ? IP4_HLEN : IP6_HLEN;
	struct bpf_fib_lookup fib;
	if (route(ctx, &fib, out, val->relay_ip, val->peer_ip, val->relay_port, val->peer_port,
		  l3_hlen + udp_len))
		return XDP_PASS;

	__u16 csum = 0;
	if (f->csum) {
		__u32 acc = (__u16)~bpf_ntohs(f->csum);
		acc = csum_endpoints(acc, f->src, f->dst, f->sport, f->dport, f->udp_len,
				     f->family, 1);
		// The removed ChannelData header: two words at an even offset, so the application
		// data keeps its 16-bit alignment and its contribution.
		acc = csum_sub(acc, channel);
		acc = csum_sub(acc, data_len);
		// The removed padding: the last `pad` bytes of the UDP payload. A byte at an even
		// offset from the UDP header is the high half of its word.
		if (pad) {
			__u8 tail[CD_MAX_PADDING];
			__u32 udp_end = f->l4_off + f->udp_len;
			if (bpf_xdp_load_bytes(ctx, udp_end - CD_MAX_PADDING, tail, CD_MAX_PADDING))
				return XDP_PASS;
			for (int i = 0; i < CD_MAX_PADDING; i++) {
				__u32 pos = f->udp_len - CD_MAX_PADDING + i;
				if (pos < (__u32)f->udp_len - pad)
					continue;
				__u16 w = (pos & 1) ? tail[i] : ((__u16)tail[i] << 8);
				acc = csum_sub(acc, w);
			}
		}
		acc = csum_endpoints(acc, val->relay_ip, val->peer_ip, val->relay_port, val->peer_port,
				     udp_len, out, 0);
		csum = ~csum_fold(acc);
		// RFC 768: a computed zero is sent as all ones (zero means "no checksum").
		if (csum == 0)
			csum = 0xffff;
		csum = bpf_htons(csum);
	}

	__u32 old_hdr = f->l4_off + UDP_HLEN + CD_HLEN;
	__u32 new_hdr = ETH_HLEN + l3_hlen + UDP_HLEN;
	int rc = resize(ctx, old_hdr, new_hdr, data_len);
	if (rc)
		return resize_failed(rc);
	// From here on the frame is rewritten: a failure can only drop it.
	if (write_headers(ctx, &fib, out, val->relay_ip, val->peer_ip, val->relay_port,
			  val->peer_port, udp_len, csum))
		return XDP_DROP;
	count(val->relay_ip, val->relay_port, 1, data_len);
	return transmit(ctx, &fib);
}

// Peer -> client: RFC 8656 §12.7 -- data from a peer on a channel-bound address goes to the
// client as ChannelData (channel number, length, data), from the server's address. No padding
// over UDP (RFC 8656 §12.5 makes it optional there).
static __noinline int to_client(struct xdp_md *ctx, const struct flow *f)
{
	struct peer_key k;
	__builtin_memset(&k, 0, sizeof(k));
	__builtin_memcpy(k.peer_ip, f->src, 16);
	__builtin_memcpy(k.relay_ip, f->dst, 16);
	k.peer_port = f->sport;
	k.relay_port = f->dport;
	struct peer_val *v = bpf_map_lookup_elem(&peers, &k);
	if (!v)
		return XDP_PASS;
	if (bpf_ktime_get_ns() >= v->expires_ns)
		return XDP_PASS;
	const struct peer_val *val = v;
	int out = is_v4_mapped(val->client_ip) ? AF_INET : AF_INET6;
	if (out != (is_v4_mapped(val->server_ip) ? AF_INET : AF_INET6))
		return XDP_PASS;
	if (f->csum == 0 && (out == AF_INET6 || f->family == AF_INET6))
		return XDP_PASS;

	__u16 data_len = f->udp_len - UDP_HLEN;
	// The new datagram must still fit a 16-bit UDP length and IPv4 total length.
	if ((__u32)data_len + UDP_HLEN + CD_HLEN + IP4_HLEN > 0xffff)
		return XDP_PASS;
	__u16 udp_len = UDP_HLEN + CD_HLEN + data_len;
	__u32 l3_hlen = out == AF_INET ? IP4_HLEN : IP6_HLEN;
	struct bpf_fib_lookup fib;
	if (route(ctx, &fib, out, val->server_ip, val->client_ip, val->server_port,
		  val->client_port, l3_hlen + udp_len))
		return XDP_PASS;

	__u16 channel = bpf_ntohs(val->channel);
	__u16 csum = 0;
	if (f->csum) {
		__u32 acc = (__u16)~bpf_ntohs(f->csum);
		acc = csum_endpoints(acc, f->src, f->dst, f->sport, f->dport, f->udp_len,
				     f->family, 1);
		acc = csum_add(acc, channel);
		acc = csum_add(acc, data_len);
		acc = csum_endpoints(acc, val->server_ip, val->client_ip, val->server_port,
				     val->client_port, udp_len, out, 0);
		csum = ~csum_fold(acc);
		if (csum == 0)
			csum = 0xffff;
		csum = bpf_htons(csum);
	}

	__u32 old_hdr = f->l4_off + UDP_HLEN;
	__u32 new_hdr = ETH_HLEN + l3_hlen + UDP_HLEN + CD_HLEN;
	int rc = resize(ctx, old_hdr, new_hdr, data_len);
	if (rc)
		return resize_failed(rc);
	if (write_headers(ctx, &fib, out, val->server_ip, val->client_ip, val->server_port,
			  val->client_port, udp_len, csum))
		return XDP_DROP;
	// RFC 8656 §12.4: the ChannelData header right after the UDP header.
	__be16 cd[2] = {val->channel, bpf_htons(data_len)};
	if (bpf_xdp_store_bytes(ctx, new_hdr - CD_HLEN, cd, CD_HLEN))
		return XDP_DROP;
	count(f->dst, f->dport, 0, data_len);
	return transmit(ctx, &fib);
}

SEC("xdp")
int turnd_relay(struct xdp_md *ctx)
{
	struct flow f;
	__builtin_memset(&f, 0, sizeof(f));
	if (parse(ctx, &f))
		return XDP_PASS;

	// RFC 8656 §12: ChannelData starts with the bits 01 (channel numbers 0x4000-0x7FFF, the
	// range turnd-proto's channel_data::parse accepts), then the length of the application
	// data, which must fit in the datagram; up to CD_MAX_PADDING bytes may follow it.
	__u16 payload = f.udp_len - UDP_HLEN;
	if (payload >= CD_HLEN) {
		__u8 cd[CD_HLEN];
		if (bpf_xdp_load_bytes(ctx, f.l4_off + UDP_HLEN, cd, CD_HLEN))
			return XDP_PASS;
		__u16 channel = ((__u16)cd[0] << 8) | cd[1];
		__u16 len = ((__u16)cd[2] << 8) | cd[3];
		if ((channel & 0xc000) == 0x4000 && (__u32)len + CD_HLEN <= payload &&
		    payload - CD_HLEN - len <= CD_MAX_PADDING) {
			int act = to_peer(ctx, &f, channel, len, payload - CD_HLEN - len);
			if (act != XDP_PASS)
				return act;
			// Not a channel of ours: maybe a peer's datagram that happens to look like
			// ChannelData, sent to a relayed address.
		}
	}
	return to_client(ctx, &f);
}

// bpf_fib_lookup is a GPL-only helper: the kernel loads this object under the GPL side of its
// dual licence.
char LICENSE[] SEC("license") = "GPL";
