#!/usr/bin/env python3
"""Reads a `yolact replay` output bag with the rosbags library and prints it as JSON.

Usage: read_replay_bag.py OUT.mcap MSG_DIR

Two independent decodings of each message: rosbags' own, from the ros2msg schema stored in the
bag (what Foxglove and `ros2 bag play` rely on), and a typestore whose yolact_ros2_msgs types come
from MSG_DIR/*.msg via get_types_from_msg (the definitions the ROS node is built from). The script
fails when they disagree. Exit status 2 when rosbags is not installed.

Input images (sensor_msgs) are reduced to their header; a PointCloud2 is kept whole, with its
points decoded here from its own `fields` (struct, independently of the Rust encoder) into
`points`: one object per point, keyed by field name.
"""
import json
import math
import struct
import sys
from pathlib import Path

try:
    from rosbags.highlevel import AnyReader
    from rosbags.typesys import Stores, get_typestore, get_types_from_msg
except ImportError as e:
    print(f'rosbags is not importable: {e}', file=sys.stderr)
    sys.exit(2)


def plain(v):
    """Message object -> JSON-able value (NaN -> None)."""
    if hasattr(v, '__dataclass_fields__'):
        return {k: plain(getattr(v, k)) for k in v.__dataclass_fields__ if k != '__msgtype__'}
    if isinstance(v, (list, tuple)):
        return [plain(x) for x in v]
    if hasattr(v, 'tolist'):
        return v.tolist()
    if isinstance(v, float) and math.isnan(v):
        return None
    return v


# sensor_msgs/PointField datatypes -> struct format characters.
POINT_FIELD_FORMATS = {1: 'b', 2: 'B', 3: 'h', 4: 'H', 5: 'i', 6: 'I', 7: 'f', 8: 'd'}


def cloud_points(msg):
    """The points of a PointCloud2 as dicts, read through its fields, offsets and endianness."""
    data = bytes(msg['data'])
    order = '>' if msg['is_bigendian'] else '<'
    points = []
    for i in range(msg['height'] * msg['width']):
        row, col = divmod(i, msg['width'])
        base = row * msg['row_step'] + col * msg['point_step']
        p = {}
        for f in msg['fields']:
            fmt = order + POINT_FIELD_FORMATS[f['datatype']]
            p[f['name']] = struct.unpack_from(fmt, data, base + f['offset'])[0]
        points.append(p)
    return points


def main():
    bag, msg_dir = Path(sys.argv[1]), Path(sys.argv[2])
    ours = get_typestore(Stores.ROS2_HUMBLE)
    for name in ('Instance', 'InstanceArray'):
        text = (msg_dir / f'{name}.msg').read_text()
        ours.register(get_types_from_msg(text, f'yolact_ros2_msgs/msg/{name}'))

    out = {'connections': [], 'messages': []}
    with AnyReader([bag], default_typestore=get_typestore(Stores.ROS2_HUMBLE)) as reader:
        for c in reader.connections:
            out['connections'].append({'topic': c.topic, 'msgtype': c.msgtype})
        for c, t, raw in reader.messages():
            from_bag = plain(reader.deserialize(raw, c.msgtype))
            rec = {'topic': c.topic, 'msgtype': c.msgtype, 'log_time_ns': t}
            if c.msgtype.startswith('yolact_ros2_msgs/'):
                from_msg = plain(ours.deserialize_cdr(raw, c.msgtype))
                if json.dumps(from_msg) != json.dumps(from_bag):
                    print(f'{c.topic} @ {t}: msg/*.msg decoding differs from the bag schema',
                          file=sys.stderr)
                    sys.exit(1)
            if c.msgtype == 'sensor_msgs/msg/PointCloud2':
                from_bag['points'] = cloud_points(from_bag)
                del from_bag['data']
            elif c.msgtype.startswith('sensor_msgs/'):
                from_bag = {'header': from_bag['header']}
            rec['msg'] = from_bag
            out['messages'].append(rec)
    json.dump(out, sys.stdout)


if __name__ == '__main__':
    main()
