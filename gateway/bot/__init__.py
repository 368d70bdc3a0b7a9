"""The Telegram bot channel: aiogram in webhook mode on the gateway's aiohttp app (see docs/bot.md).

`provider` sends the outbox's bot messages, `webhook` receives updates, `handlers` turns them into
conversation inputs, `chats` maps a private chat to a citizen. Nothing here decides a rating rule:
that is `conversations/` and `gateway.evaluations`.
"""
