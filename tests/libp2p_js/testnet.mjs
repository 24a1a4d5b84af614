// A local js-libp2p Kademlia network for phase-client's interop tests and benchmark.
//
//   node --import ./polyfill.mjs testnet.mjs [--nodes N] [--validity-ms N]
//
// Starts N nodes (TCP on 127.0.0.1 only, Noise, Yamux, identify, ping, kad-dht in server mode on
// the standard /ipfs/kad/1.0.0, no bootstrap list, no autodial outside), joins them in a chain
// through node 0, then answers JSON lines on stdin with one JSON line each on stdout:
//   {"cmd": "info"}                                   -> {"nodes": [{"peer_id", "addrs"}]}
//   {"cmd": "spawn", "announce": ["/ip4/.../http"], "client": false}
//                                                     -> a new node that also announces these
//                                                        (client: a DHT client, as ours is;
//                                                        "key_type": "RSA" for an RSA identity;
//                                                        "listen": ["/ip6/::1/tcp/0"] elsewhere)
//   {"cmd": "provide", "node": I, "key": TEXT}        -> node I provides sha256(TEXT)
//   {"cmd": "find", "node": I, "key": TEXT, "timeout_ms": T, "want": N}
//                                                     -> {"providers": [...], "ms", "messages"}
//   {"cmd": "cid", "key": TEXT}                        -> {"cid", "multihash"}
//   {"cmd": "stop", "node": I}                         -> node I stopped
//   {"cmd": "quit"}
// Every answer carries "ok" and the request's "id". The first line printed is {"ready": ...}.
import { createInterface } from 'node:readline'
import { noise } from '@chainsafe/libp2p-noise'
import { yamux } from '@chainsafe/libp2p-yamux'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { identify } from '@libp2p/identify'
import { kadDHT, passthroughMapper } from '@libp2p/kad-dht'
import { ping } from '@libp2p/ping'
import { tcp } from '@libp2p/tcp'
import { multiaddr } from '@multiformats/multiaddr'
import { createLibp2p } from 'libp2p'
import { CID } from 'multiformats/cid'
import * as raw from 'multiformats/codecs/raw'
import { sha256 } from 'multiformats/hashes/sha2'

const args = process.argv.slice(2)
const flag = (name, fallback) => args.includes(name) ? Number(args[args.indexOf(name) + 1]) : fallback
const count = flag('--nodes', 5) || 5
// --validity-ms N: provider records expire after N ms (kad-dht's default: 48 h), checked every
// N/5 ms, so a test can see a dead provider's record go
const validity = flag('--validity-ms', undefined)
if (count < 1 || count > 200) {
  process.stderr.write('--nodes: 1 to 200\n')
  process.exit(2)
}

const loopbackOnly = (addrs) => addrs.filter(ma => {
  const text = ma.toString()
  return text.startsWith('/ip4/127.') || text.startsWith('/ip6/::1/')
})

async function makeNode (announce = [], clientMode = false, keyType = 'Ed25519', listen = ['/ip4/127.0.0.1/tcp/0']) {
  const node = await createLibp2p({
    privateKey: await generateKeyPair(keyType, keyType === 'RSA' ? 2048 : undefined),
    addresses: { listen, appendAnnounce: announce },
    transports: [tcp()],
    connectionEncrypters: [noise()],
    streamMuxers: [yamux()],
    peerDiscovery: [],
    connectionManager: {
      // every peer here dials from 127.0.0.1: the default of 5 inbound connections per second
      // per host would deny the test's own clients
      inboundConnectionThreshold: 100000,
      maxIncomingPendingConnections: 100
    },
    connectionGater: {
      // loopback only: never dial anything else, whatever a peer says
      denyDialMultiaddr: (ma) => loopbackOnly([ma]).length === 0
    },
    services: {
      identify: identify(),
      ping: ping(),
      dht: kadDHT({
        protocol: '/ipfs/kad/1.0.0',
        clientMode,
        peerInfoMapper: passthroughMapper,
        initialQuerySelfInterval: 0,
        ...(validity === undefined
          ? {}
          : { reprovide: { validity, interval: Math.max(100, validity / 5), threshold: validity / 2 } })
      })
    }
  })
  await node.start()
  return node
}

const nodes = []
const out = (obj) => process.stdout.write(JSON.stringify(obj) + '\n')
const info = (node) => ({
  peer_id: node.peerId.toString(),
  addrs: node.getMultiaddrs().map(ma => ma.toString())
})
const cidOf = async (text) => CID.createV1(raw.code, await sha256.digest(new TextEncoder().encode(text)))

async function join (node) {
  if (nodes.length === 0) return
  const first = nodes[0].getMultiaddrs().filter(ma => ma.toString().includes('/tcp/'))[0]
  for (let attempt = 0; attempt < 3; attempt++) { // a loaded machine may time a dial out
    try {
      await node.dial(first)
      break
    } catch (err) {
      if (attempt === 2) throw err
    }
  }
  // wait (bounded) until identify has put the peer in the routing table
  for (let i = 0; i < 100 && node.services.dht.routingTable.size === 0; i++) {
    await new Promise(resolve => setTimeout(resolve, 20))
  }
}

for (let i = 0; i < count; i++) {
  const node = await makeNode()
  await join(node)
  nodes.push(node)
}
// each node also dials the previous one, so the routing tables are not a star
for (let i = 2; i < nodes.length; i++) {
  await nodes[i].dial(nodes[i - 1].getMultiaddrs()[0]).catch(() => {})
}
out({ ready: true, nodes: nodes.map(info) })

async function handle (req) {
  const node = req.node === undefined ? undefined : nodes[req.node]
  if (req.node !== undefined && node === undefined) throw new Error(`no node ${req.node}`)
  switch (req.cmd) {
    case 'info':
      return { nodes: nodes.map(n => n === null ? null : info(n)) }
    case 'spawn': {
      const announce = (req.announce ?? []).map(a => multiaddr(a).toString())
      const listen = (req.listen ?? ['/ip4/127.0.0.1/tcp/0']).map(a => multiaddr(a).toString())
      if (loopbackOnly(listen.map(a => multiaddr(a))).length !== listen.length) throw new Error('loopback only')
      const fresh = await makeNode(announce, req.client === true, req.key_type ?? 'Ed25519', listen)
      await join(fresh)
      nodes.push(fresh)
      return { node: nodes.length - 1, ...info(fresh) }
    }
    case 'provide': {
      const cid = await cidOf(req.key)
      let messages = 0
      const started = performance.now()
      for await (const event of node.services.dht.provide(cid)) {
        if (event.name === 'SEND_QUERY') messages++
      }
      return { cid: cid.toString(), ms: performance.now() - started, messages }
    }
    case 'find': {
      const cid = await cidOf(req.key)
      const want = req.want ?? 20
      const found = new Map()
      let messages = 0
      const trace = []
      const started = performance.now()
      const signal = AbortSignal.timeout(req.timeout_ms ?? 5000)
      try {
        for await (const event of node.services.dht.findProviders(cid, { signal })) {
          if (req.trace === true) trace.push(`${Math.round(performance.now() - started)} ${event.name} ${event.to ?? event.from ?? ''}`)
          if (event.name === 'SEND_QUERY') messages++
          if (event.name === 'PROVIDER') {
            for (const p of event.providers) {
              found.set(p.id.toString(), { peer_id: p.id.toString(), addrs: p.multiaddrs.map(ma => ma.toString()) })
            }
            if (found.size >= want) break
          }
        }
      } catch (err) {
        if (!signal.aborted) throw err
      }
      return { providers: [...found.values()], ms: performance.now() - started, messages, trace }
    }
    case 'cid': {
      const cid = await cidOf(req.key)
      return { cid: cid.toString(), multihash: Buffer.from(cid.multihash.bytes).toString('hex') }
    }
    case 'stop':
      await node.stop()
      nodes[req.node] = null
      return {}
    case 'quit':
      await Promise.all(nodes.filter(n => n !== null).map(n => n.stop()))
      out({ ok: true, id: req.id })
      process.exit(0)
      break
    default:
      throw new Error(`unknown command ${req.cmd}`)
  }
}

const lines = createInterface({ input: process.stdin })
lines.on('line', (line) => {
  let req
  try { req = JSON.parse(line) } catch { out({ ok: false, error: 'not JSON' }); return }
  handle(req).then(
    result => out({ ok: true, id: req.id, ...result }),
    err => out({ ok: false, id: req.id, error: String(err?.message ?? err) })
  )
})
lines.on('close', async () => {
  await Promise.all(nodes.filter(n => n !== null).map(n => n.stop().catch(() => {})))
  process.exit(0)
})
