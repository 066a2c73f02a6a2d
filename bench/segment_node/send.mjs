// Sends Segment calls with the real @segment/analytics-node to Courier and reports what the
// client was told: node send.mjs HOST WRITE_KEY EVENTS RATE_PER_SEC PREFIX OUT.json
//
// The calls are the ones bench/segment_clients.py plans (call_plan): the same kinds, names,
// properties and messageIds, so the Python side can check every one in the closed buckets.
// Each call's callback says whether its batch was delivered (a 2xx) or dropped.
import { writeFileSync } from 'node:fs'
import { Analytics } from '@segment/analytics-node'

const [host, writeKey, eventsArg, rateArg, prefix, out] = process.argv.slice(2)
const events = Number(eventsArg)
const rate = Number(rateArg)

// Every option but host is the library's default, except a batch of 100 (flushAt) like the
// Python client's, so both send the same request sizes.
const analytics = new Analytics({ writeKey, host, flushAt: 100, flushInterval: 200 })
const delivered = []
const failed = []
const errors = []
analytics.on('error', (err) => errors.push(String(err?.reason ?? err)))

// Keep in step with call_plan() in bench/segment_clients.py.
function call(i) {
  const messageId = `${prefix}-${i}`
  const who = { userId: `user-${i % 97}` }
  const kind = i % 10
  if (kind === 0) return ['identify', { ...who, messageId, traits: { plan: 'pro', n: i } }]
  if (kind === 1) return ['page', { ...who, messageId, name: 'Home', properties: { path: '/' } }]
  if (kind === 2) return ['screen', { anonymousId: `anon-${i}`, messageId, name: 'Player' }]
  if (kind === 3) return ['group', { ...who, messageId, groupId: `g${i % 7}`, traits: { size: 3 } }]
  if (kind === 4) return ['alias', { userId: `user-${i % 97}`, previousId: `anon-${i}`, messageId }]
  if (kind === 5) {
    return ['track', { ...who, messageId, event: 'Button Clicked', properties: { button: 'buy' } }]
  }
  const msPlayed = i % 50 === 6 ? 'not a number' : 1000 + i // invalid: kept in _invalid
  return ['track', { ...who, messageId, event: 'Song Played', properties: { song_id: `s${i}`, ms_played: msPlayed } }]
}

const started = Date.now()
for (let i = 0; i < events; i++) {
  const [method, params] = call(i)
  analytics[method](params, (err) => {
    if (err) failed.push({ id: params.messageId, error: String(err?.reason ?? err) })
    else delivered.push(params.messageId)
  })
  // Pace the calls so that the gateway's restarts happen while the client is sending.
  if (i % 100 === 99) await new Promise((resolve) => setImmediate(resolve)) // let batches go out
  const due = started + ((i + 1) * 1000) / rate
  const wait = due - Date.now()
  if (wait > 0) await new Promise((resolve) => setTimeout(resolve, wait))
}
await analytics.closeAndFlush({ timeout: 600000 })
writeFileSync(out, JSON.stringify({ delivered, failed, errors, seconds: (Date.now() - started) / 1000 }))
