"""The development kit that tests/, bench/ and demo/ share (not part of the runtime wheel; importable
from the checkout through `make install`'s .pth line): loopback ports and the clock variables a
child process inherits (``ports``), waiting on a condition or on a starting process instead of a
sleep (``waits``), stopping a process by its handle (``processes``), a redis-server of a test's own
(``scratchredis``), a local Redis Cluster (``rediscluster``). None of tests/, bench/, demo/
imports another's internals; what two of them need lives here."""
