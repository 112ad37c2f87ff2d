// The Telegram `/status` command with node-telegram-bot-api: the API renders and escapes the
// message (HTML), the bot only sends it with the parse mode the API names.
import { LivestatusError } from './livestatus.js';

/** @typedef {import('node-telegram-bot-api')} TelegramBot */
/** @typedef {import('node-telegram-bot-api').Message} Message */
/** @typedef {import('./livestatus.js').Livestatus} Livestatus */

export const STATUS_COMMAND = /^\/status(?:@\w+)?(?:\s|$)/;

/**
 * Answer `/status` in any chat with the sender's live status.
 * @param {TelegramBot} bot
 * @param {{ livestatus: Livestatus, userFor: (message: Message) => Promise<string | null> | string | null }} options
 *   userFor: the sender's masterAccountId (null: not linked to an account).
 * @returns {(message: Message) => Promise<Message>} the handler (also registered on the bot)
 */
export function attachStatusCommand(bot, { livestatus, userFor }) {
  /** @param {Message} message */
  async function answer(message) {
    const masterAccountId = await userFor(message);
    if (!masterAccountId) {
      return bot.sendMessage(message.chat.id, 'Link your account first to see your status.');
    }
    let status;
    try {
      status = await livestatus.statusText(masterAccountId, 'telegram');
    } catch (error) {
      if (!(error instanceof LivestatusError) || error.status < 429) throw error;
      const wait = error.retryAfterS ? ` in ${error.retryAfterS} s` : ' shortly';
      return bot.sendMessage(message.chat.id, `Status is unavailable right now; try again${wait}.`);
    }
    return bot.sendMessage(message.chat.id, status.text, {
      parse_mode: /** @type {import('node-telegram-bot-api').ParseMode} */ (status.parseMode ?? 'HTML'),
      disable_web_page_preview: true,
    });
  }
  bot.onText(STATUS_COMMAND, (message) => {
    answer(message).catch((error) => console.error('/status failed:', error.message));
  });
  return answer;
}
