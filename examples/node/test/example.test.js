// The example against the real thing: documents written with the MongoDB Node.js driver into the
// stand-in, applied by the projector, served by the API; the Telegram bot answers /status through
// a Bot API stand-in; discord.js's builders take the Discord text as is; the subscriber follows.
//
// tests/test_node_example.py starts MongoDB's stand-in, Redis, the projector and the API and runs
// this with LIVESTATUS_URL, LIVESTATUS_KEY and MONGO_URL set.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';

import { EmbedBuilder, WebhookClient } from 'discord.js';
import { Decimal128, MongoClient, ObjectId } from 'mongodb';

import { CONTENT_LIMIT, postStatus, statusEmbed, statusMessage } from '../src/discord.js';
import { clusterTime, createClient, LivestatusError } from '../src/livestatus.js';
import { subscribe } from '../src/subscribe.js';
import { attachStatusCommand } from '../src/telegram.js';
import { startDiscordApi } from './discord-standin.js';
import { startBotApi } from './telegram-standin.js';

/** @param {string} name */
function env(name) {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set: run this through pytest tests/test_node_example.py`);
  return value;
}

const livestatus = createClient({ baseUrl: env('LIVESTATUS_URL'), key: env('LIVESTATUS_KEY') });
const mongo = new MongoClient(env('MONGO_URL'), { serverSelectionTimeoutMS: 10_000 });
const db = mongo.db(process.env.MONGO_DB ?? 'app');
const tasks = db.collection('generationOutputs');
const economy = db.collection('userEconomy');

/**
 * @template T
 * @param {() => Promise<T | null | undefined | false>} probe
 * @param {string} what
 * @returns {Promise<T>}
 */
async function eventually(probe, what, timeoutMs = 30_000) {
  const deadline = Date.now() + timeoutMs;
  let last;
  while (Date.now() < deadline) {
    last = await probe();
    if (last) return last;
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  throw new Error(`${what} did not happen within ${timeoutMs} ms`);
}

/** A user as the platform writes one: ObjectIds, a Decimal128 balance, a running task. */
async function newUser({ credit = '1.50', progress = 0.1 } = {}) {
  const account = new ObjectId();
  const generation = new ObjectId();
  await economy.insertOne({ masterAccountId: account, usdCredit: Decimal128.fromString(credit), exp: 3 });
  await tasks.insertOne({
    _id: generation, masterAccountId: account, status: 'processing', toolId: 'flux', toolDisplayName: 'FLUX Schnell',
    notificationPlatform: 'telegram', requestTimestamp: new Date(), progress,
  });
  return { user: account.toHexString(), account, generation };
}

/** @param {ObjectId} account @param {string} amount */
const credit = (account, amount) =>
  economy.updateOne({ masterAccountId: account }, { $inc: { usdCredit: Decimal128.fromString(amount) } });

before(() => mongo.connect());
after(() => mongo.close());

test('writes of the MongoDB Node driver (insert, $set progress, $inc Decimal128, findOneAndUpdate) reach the API exactly', async () => {
  const { user, account, generation } = await newUser();
  await tasks.updateOne({ _id: generation }, { $set: { progress: 0.5, updatedAt: new Date() } });
  await credit(account, '0.25');
  // A debit read back in one step, as a bot charges for a generation.
  const debited = await economy.findOneAndUpdate({ masterAccountId: account },
    { $inc: { usdCredit: Decimal128.fromString('-0.05') } }, { returnDocument: 'after' });
  assert.equal(debited?.usdCredit.toString(), '1.70');
  const snapshot = await eventually(async () => {
    const found = await livestatus.status(user);
    return found.balance.usdCredit === '1.70' && found.liveTasks[0]?.progressPercent === 50 && found;
  }, 'the projector applying the writes');
  assert.equal(snapshot.masterAccountId, user);
  assert.equal(snapshot.balance.exp, 3);
  assert.deepEqual(snapshot.liveTasks.map((task) => [task.generationId, task.status, task.toolDisplayName]),
    [[generation.toHexString(), 'processing', 'FLUX Schnell']]);
});

test('an API error arrives as a LivestatusError with its code', async () => {
  await assert.rejects(livestatus.status('not a valid id!'), (error) =>
    error instanceof LivestatusError && error.status === 400 && error.code === 'invalid_user_id');
});

test('/status on Telegram: node-telegram-bot-api sends the API text with parse_mode HTML', async (t) => {
  const { user } = await newUser({ credit: '2.50' });
  await eventually(async () => (await livestatus.status(user)).balance.usdCredit === '2.50', 'the new user');
  const botApi = await startBotApi();
  process.env.NTBA_FIX_319 = '1';
  const { default: TelegramBot } = await import('node-telegram-bot-api');
  const bot = new TelegramBot('123456:stand-in', { polling: { interval: 50, params: { timeout: 0 } }, baseApiUrl: botApi.url });
  t.after(async () => { await bot.stopPolling(); await botApi.close(); });
  attachStatusCommand(bot, { livestatus, userFor: (message) => (message.from?.id === 4242 ? user : null) });

  const date = Math.floor(Date.now() / 1000);
  const command = (/** @type {number} */ id, /** @type {number} */ from) => ({
    update_id: id,
    message: { message_id: id, date, text: '/status', entities: [{ type: 'bot_command', offset: 0, length: 7 }],
      chat: { id: from, type: 'private' }, from: { id: from, is_bot: false, first_name: 'Ada' } },
  });
  botApi.push(command(1, 4242));
  botApi.push(command(2, 99)); // not linked to an account
  const sent = await eventually(async () => botApi.sent().length >= 2 && botApi.sent(), 'two sendMessage calls');

  const linked = sent.find((message) => message.chat_id === '4242');
  assert.ok(linked, JSON.stringify(sent));
  assert.equal(linked.parse_mode, 'HTML');
  assert.match(linked.text, /^<b>Balance<\/b>: \$2\.50 · 6,756 points · 3 exp\n<b>1 live task<\/b>\n▸ <b>FLUX Schnell<\/b>/);
  const unlinked = sent.find((message) => message.chat_id === '99');
  assert.equal(unlinked?.text, 'Link your account first to see your status.');
  assert.ok(botApi.calls.every((call) => call.token === '123456:stand-in'));
});

test('/status when the API answers 503: the user is told to retry, with the Retry-After', async (t) => {
  const botApi = await startBotApi();
  t.after(() => botApi.close());
  // The API's own error body and header (store_unavailable, as api/errors.py sends it), without stopping Redis.
  const unavailable = async () => new Response(
    JSON.stringify({ error: { code: 'store_unavailable', message: 'the status store is unavailable; retry shortly' } }),
    { status: 503, headers: { 'Content-Type': 'application/json', 'Retry-After': '1' } });
  const down = createClient({ baseUrl: env('LIVESTATUS_URL'), key: env('LIVESTATUS_KEY'), fetch: unavailable });
  process.env.NTBA_FIX_319 = '1';
  const { default: TelegramBot } = await import('node-telegram-bot-api');
  const bot = new TelegramBot('123456:stand-in', { polling: false, baseApiUrl: botApi.url });
  const answer = attachStatusCommand(bot, { livestatus: down, userFor: () => 'someone' });
  await answer({ message_id: 1, date: 0, chat: { id: 7, type: 'private' }, text: '/status' });
  assert.deepEqual(botApi.sent().map((message) => [message.chat_id, message.text]),
    [['7', 'Status is unavailable right now; try again in 1 s.']]);
});

test("discord.js's builders take the API's Discord text as is, even for a user with many hostile tasks", async () => {
  const { user, account } = await newUser();
  await tasks.insertMany(Array.from({ length: 60 }, (_, i) => ({
    masterAccountId: account, status: 'processing', toolId: `tool-${i}`, requestTimestamp: new Date(), progress: i / 60,
    toolDisplayName: `@everyone <@123> **bold** ${'Ω'.repeat(40)} ${i}`,
  })));
  await eventually(async () => (await livestatus.status(user)).liveTasks.length === 61, 'the 61 tasks');
  const status = await livestatus.statusText(user, 'discord');
  assert.equal(status.platform, 'discord');
  assert.deepEqual(status.allowedMentions, { parse: [] });

  const message = statusMessage(status);
  assert.equal(message.content, status.text); // as is: not cut, not escaped again
  assert.ok(status.text.length <= CONTENT_LIMIT, `${status.text.length} characters`);
  assert.doesNotMatch(status.text, /@everyone|<@123>/); // the API defused the mentions
  assert.match(status.text, /more/); // the tasks that did not fit are counted

  const embed = statusEmbed(status).toJSON(); // EmbedBuilder validates against Discord's limits
  assert.equal(embed.description, status.text);
  assert.throws(() => new EmbedBuilder().setDescription('x'.repeat(4097))); // and does validate
});

test('discord.js posts the status through a webhook exactly as the API rendered it, pinging nobody', async (t) => {
  const { user } = await newUser({ credit: '3.00' });
  await eventually(async () => (await livestatus.status(user)).balance.usdCredit === '3.00', 'the new user');
  const discord = await startDiscordApi();
  const webhook = new WebhookClient({ id: '1234567890', token: 'stand-in-token' }, { rest: { api: discord.api } });
  t.after(async () => { webhook.destroy(); await discord.close(); });
  const status = await livestatus.statusText(user, 'discord');
  await postStatus(webhook, status);
  assert.equal(discord.posted.length, 1);
  const { path, body } = discord.posted[0];
  assert.match(path, /^\/api\/v10\/webhooks\/1234567890\/stand-in-token$/);
  assert.equal(body.content, status.text);
  assert.deepEqual(body.allowed_mentions, { parse: [] });
  assert.match(body.content, /^\*\*Balance\*\*\\: \$3\.00 · 8,108 points · 3 exp\n/);
});

test('the SSE subscriber gets the current snapshot, then each new version', async () => {
  const { user, account } = await newUser({ credit: '1.00' });
  await eventually(async () => (await livestatus.status(user)).version > 0, 'the new user');
  /** @type {import('../src/livestatus.js').Snapshot[]} */
  const snapshots = [];
  /** @type {number[]} */
  const synced = [];
  const subscription = subscribe(livestatus, user, {
    onSnapshot: (snapshot) => snapshots.push(snapshot),
    onSync: (sync) => synced.push(sync.version),
  });
  try {
    await eventually(async () => synced.length > 0, 'the sync event');
    assert.equal(snapshots.at(-1)?.balance.usdCredit, '1.00');
    await credit(account, '0.125');
    const latest = await eventually(async () => snapshots.find((s) => s.balance.usdCredit === '1.125'), 'the new balance');
    assert.ok(latest.version > synced[0]);
  } finally {
    subscription.close();
  }
});

/** "seconds.increment" as the API's position ("%010d.%010d"), which sorts as time does. */
const asPosition = (/** @type {string} */ time) => time.split('.').map((part) => part.padStart(10, '0')).join('.');

test("a read naming the session's operationTime already shows my write (no retry loop)", async () => {
  const account = new ObjectId();
  const generation = new ObjectId();
  const user = account.toHexString();
  const session = mongo.startSession();
  try {
    await tasks.insertOne({
      _id: generation, masterAccountId: account, status: 'processing', toolId: 'flux', toolDisplayName: 'FLUX Schnell',
      notificationPlatform: 'telegram', requestTimestamp: new Date(), progress: 0.2,
    }, { session });
    const written = clusterTime(session);
    assert.match(written, /^\d+\.\d+$/);
    const snapshot = await livestatus.status(user, { afterClusterTime: written }); // at once: no eventually()
    assert.deepEqual(snapshot.liveTasks.map((task) => task.generationId), [generation.toHexString()]);
    assert.ok(snapshot.source?.position && snapshot.source.position >= asPosition(written), JSON.stringify(snapshot.source));

    await tasks.updateOne({ _id: generation }, { $set: { progress: 0.8, updatedAt: new Date() } }, { session });
    const text = await livestatus.statusText(user, 'telegram', { afterClusterTime: clusterTime(session) });
    assert.match(text.text, /80%/);
  } finally {
    await session.endSession();
  }
});

test('/status with live edits: the reply is edited in place, paced by the interval, until the finished state', async (t) => {
  const intervalMs = Number(env('LIVESTATUS_TEXT_INTERVAL_S')) * 1000;
  const { user, generation } = await newUser({ credit: '4.00', progress: 0.1 });
  await eventually(async () => (await livestatus.status(user)).liveTasks.length === 1, 'the new user');
  const botApi = await startBotApi();
  process.env.NTBA_FIX_319 = '1';
  const { default: TelegramBot } = await import('node-telegram-bot-api');
  const bot = new TelegramBot('123456:stand-in', { polling: false, baseApiUrl: botApi.url });
  t.after(() => botApi.close());
  /** @type {(reply: import('node-telegram-bot-api').Message) => void} */
  let finished = () => {};
  const done = new Promise((resolve) => { finished = resolve; });
  const answer = attachStatusCommand(bot, { livestatus, userFor: () => user, live: true, onFinished: (reply) => finished(reply) });
  const reply = await answer({ message_id: 1, date: 0, chat: { id: 77, type: 'private' }, text: '/status' });
  assert.match(reply.text ?? '', /10%/);

  for (const progress of [0.3, 0.5, 0.7]) { // each written once the previous one is on screen
    await tasks.updateOne({ _id: generation }, { $set: { progress, updatedAt: new Date() } });
    const shown = `${Math.round(progress * 100)}%`;
    await eventually(async () => botApi.edits().some((edit) => edit.params.text.includes(shown)), `the edit showing ${shown}`);
  }
  await tasks.updateOne({ _id: generation }, { $set: { status: 'completed', updatedAt: new Date() } });
  assert.equal((await done).message_id, reply.message_id);

  const edits = botApi.edits();
  assert.ok(edits.length >= 4, JSON.stringify(edits.map((edit) => edit.params.text)));
  assert.ok(edits.every(({ params }) => params.chat_id === '77' && Number(params.message_id) === reply.message_id
    && params.parse_mode === 'HTML'));
  // Paced: the k-th edit no earlier than k intervals after the first. Checked on the schedule, not
  // gap by gap: the stand-in stamps each edit as it arrives, and one late delivery shortens the gap
  // after it (the API's gaps between sends are checked exactly in tests/test_api_textpacing.py).
  const sinceFirst = edits.map((edit) => edit.at - edits[0].at);
  assert.ok(sinceFirst.every((elapsed, k) => elapsed >= k * intervalMs - 100), `edits ahead of the pace: ${sinceFirst}`);
  assert.match(edits.at(-1)?.params.text ?? '', /Nothing running right now/); // the finished state
  assert.doesNotMatch(edits.at(-1)?.params.text ?? '', /live task/);
});
