// The Discord status message through discord.js's own builders. The API's Discord text already
// fits Discord's limits (2000 characters of content; an embed description takes 4096) and has
// its mentions defused; send it as is, with the allowed_mentions the API names.
import { EmbedBuilder } from 'discord.js';

/** Discord's limit on a message's content, in UTF-16 code units (what the API counts too). */
export const CONTENT_LIMIT = 2000;

/** @typedef {import('./livestatus.js').StatusText} StatusText */
/** @typedef {import('discord.js').MessageCreateOptions} MessageCreateOptions */

/**
 * The message options for `channel.send()`: the text as content, pinging nobody.
 * @param {StatusText} status the API's answer for platform=discord
 * @returns {MessageCreateOptions}
 */
export function statusMessage(status) {
  if (status.platform !== 'discord') throw new Error(`expected Discord text, got ${status.platform}`);
  if (status.text.length > CONTENT_LIMIT) throw new RangeError(`${status.text.length} characters is over Discord's ${CONTENT_LIMIT}`);
  return { content: status.text, allowedMentions: { parse: [] } };
}

/**
 * The same text as an embed (EmbedBuilder validates the description against Discord's limits).
 * @param {StatusText} status
 * @param {string} [title]
 */
export function statusEmbed(status, title = 'Your status') {
  return new EmbedBuilder().setTitle(title).setDescription(status.text).setColor(0x5865f2);
}

/**
 * Post the status through a webhook (a `WebhookClient`, or a channel's `Webhook`): no gateway needed.
 * @param {import('discord.js').WebhookClient} webhook
 * @param {StatusText} status
 */
export function postStatus(webhook, status) {
  return webhook.send({ ...statusMessage(status), username: 'livestatus' });
}
