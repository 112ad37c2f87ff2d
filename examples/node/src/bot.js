// A runnable Telegram bot answering /status from livestatus, and a console subscriber.
//
//   LIVESTATUS_URL=http://127.0.0.1:8000 LIVESTATUS_KEY=... TELEGRAM_TOKEN=... \
//   USERS='{"<telegram user id>": "<masterAccountId>"}' node src/bot.js
//   LIVESTATUS_URL=... LIVESTATUS_KEY=... node src/bot.js --follow <masterAccountId>
//
// TELEGRAM_API_URL points the bot at another Bot API server (a local one, or a test stand-in).
import { createClient } from './livestatus.js';
import { subscribe } from './subscribe.js';
import { attachStatusCommand } from './telegram.js';

/** @param {string} name */
function required(name) {
  const value = process.env[name];
  if (!value) {
    console.error(`bot: set ${name}`);
    process.exit(2);
  }
  return value;
}

const livestatus = createClient({ baseUrl: required('LIVESTATUS_URL'), key: required('LIVESTATUS_KEY') });
const [flag, who] = process.argv.slice(2);

if (flag === '--follow' && who) {
  subscribe(livestatus, who, {
    onSnapshot: (snapshot) => console.log(`v${snapshot.version}: $${snapshot.balance.usdCredit}, ${snapshot.liveTasks.length} live`),
    onSync: (sync) => console.log(`caught up at v${sync.version}`),
    onEnd: (end) => console.log(`stream ended: ${end.reason}`),
  });
} else {
  /** @type {Record<string, string>} */
  const users = JSON.parse(process.env.USERS ?? '{}');
  process.env.NTBA_FIX_319 ??= '1'; // node-telegram-bot-api: no promise-cancellation warning
  const { default: TelegramBot } = await import('node-telegram-bot-api');
  const bot = new TelegramBot(required('TELEGRAM_TOKEN'), {
    polling: true,
    baseApiUrl: process.env.TELEGRAM_API_URL || undefined,
  });
  attachStatusCommand(bot, { livestatus, userFor: (message) => users[String(message.from?.id)] ?? null });
  console.log('bot: answering /status');
}
