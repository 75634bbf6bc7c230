# The SMTP sink of the end-to-end tests, run by Debian's aiosmtpd: stores every accepted message in a
# Maildir, answers 550 to recipients starting with "reject", and can take `delay` seconds over DATA
# (touching `receiving` first) so a test can kill a worker mid-send.
import asyncio, mailbox, os

class Sink:
    def __init__(self, path, delay="0"):
        self.path = path
        self.box = mailbox.Maildir(path, create=True)
        self.delay = float(delay)

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address.lower().startswith("reject"):
            return "550 5.1.1 <%s>: mailbox unavailable" % address
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        if self.delay:
            open(os.path.join(self.path, "receiving"), "w").close()
            await asyncio.sleep(self.delay)
        self.box.add(envelope.original_content or envelope.content)
        return "250 Message accepted for delivery"

    @classmethod
    def from_cli(cls, parser, *args):
        return cls(*args)
