# Appends to an outbox in a loop until killed, for the kill -9 test.
# argv: dir max_bytes. Prints the recovered state as one JSON line, then "s <seq> <kind>"
# after every append returns, "a <seq>" after every ack returns and "f" on OutboxFull.
# With argv[3] == "check" it prints the state and exits.
import json
import sys

from outbox import Outbox, OutboxFull

ob = Outbox(sys.argv[1], max_bytes=int(sys.argv[2]), seg_bytes=300)
items = ob.peek(100000, 100000000)
print(json.dumps({"next": ob.next_seq, "acked": ob.acked, "dropped_corrupt": ob.dropped_corrupt,
                  "items": [[it["seq"], it["kind"]] for it in items]}))
if len(sys.argv) > 3:
    sys.exit(0)
i = 0
while True:
    i += 1
    kind = "event" if i % 3 == 0 else "reading"
    try:
        seq = ob.append(kind, {"i": i, "pad": "x" * (i % 17)})
    except OutboxFull:
        print("f")
        ob.ack(ob.next_seq - 1)
        continue
    print("s %d %s" % (seq, kind))
    if i % 7 == 0:
        ob.ack(seq - 4)
        print("a %d" % (seq - 4))
