// Node 20 lacks Promise.withResolvers (Node 22 has it); libp2p@2 uses it. Loaded with
// `node --import ./polyfill.mjs`.
if (typeof Promise.withResolvers !== 'function') {
  Promise.withResolvers = function withResolvers () {
    let resolve
    let reject
    const promise = new Promise((res, rej) => { resolve = res; reject = rej })
    return { promise, resolve, reject }
  }
}
