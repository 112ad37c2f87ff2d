// The Telegram `/status` command with node-telegram-bot-api: the API renders and escapes the
// message (HTML), the bot only sends it with the parse mode the API names.
import { LivestatusError } from './livestatus.js';
import { followStatusText } from './livetext.js';

/** @typedef {import('node-telegram-bot-api')} TelegramBot */
/** @typedef {import('node-telegram-bot-api').Message} Message */
/** @typedef {import('./livestatus.js').Livestatus} Livestatus */

export const STATUS_COMMAND = /^\/status(?:@\w+)?(?:\s|$)/;

/**
 * Answer `/status` in any chat with the sender's live status.
 * @param {TelegramBot} bot
 * @param {{
 *   livestatus: Livestatus,
 *   userFor: (message: Message) => Promise<string | null> | string | null,
 *   live?: boolean,
 *   onFinished?: (reply: Message) => void,
 * }} options
 *   userFor: the sender's masterAccountId (null: not linked to an account); live: keep editing the
 *   reply in place from the live chat text stream until no task is live (onFinished then).
 * @returns {(message: Message) => Promise<Message>} the handler (also registered on the bot)
 */
export function attachStatusCommand(bot, { livestatus, userFor, live = false, onFinished }) {
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
    const parseMode = /** @type {import('node-telegram-bot-api').ParseMode} */ (status.parseMode ?? 'HTML');
    const reply = await bot.sendMessage(message.chat.id, status.text, { parse_mode: parseMode, disable_web_page_preview: true });
    if (live) keepEditing(reply, masterAccountId, status.text, parseMode);
    return reply;
  }

  /**
   * Edit `reply` with each new text of the live stream (paced by the server: at most one event per
   * interval, the newest state) until the final one. Telegram refuses an edit that changes nothing,
   * so an unchanged text is skipped.
   * @param {Message} reply
   * @param {string} masterAccountId
   * @param {string} shown
   * @param {import('node-telegram-bot-api').ParseMode} parseMode
   */
  function keepEditing(reply, masterAccountId, shown, parseMode) {
    const follow = followStatusText(livestatus, masterAccountId, 'telegram', {
      onText: async (live) => {
        if (live.text === shown) return;
        shown = live.text;
        await bot.editMessageText(live.text, {
          chat_id: reply.chat.id, message_id: reply.message_id, parse_mode: parseMode, disable_web_page_preview: true,
        });
      },
    });
    follow.done.then(() => onFinished?.(reply), (error) => console.error('/status live edits stopped:', error.message));
  }
  bot.onText(STATUS_COMMAND, (message) => {
    answer(message).catch((error) => console.error('/status failed:', error.message));
  });
  return answer;
}
