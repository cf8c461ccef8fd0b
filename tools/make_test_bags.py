#!/usr/bin/env python3
"""Writes the rosbag2 test fixtures under tests/fixtures/bags/ (see README.md there).

Needs `pip install rosbags pillow`. The same frames go into an MCAP bag and a sqlite3 bag;
expected.json records, per message, the topic, log time, header and the RGB pixels the test
must decode (or the reason it must refuse the frame). Damaged copies of both bags are written
as single files next to them.
"""
import base64
import io
import json
import shutil
import sqlite3
import sys
from pathlib import Path

import numpy as np
from PIL import Image as PilImage
from rosbags.rosbag2 import CompressionFormat, CompressionMode, StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore

W, H = 32, 24
MSGS_PER_CHUNK = 3
OUT = Path(sys.argv[1]) if len(sys.argv) > 1 and not sys.argv[1].startswith('--') else Path(__file__).resolve().parent.parent / 'tests/fixtures/bags'

ts = get_typestore(Stores.ROS2_HUMBLE)
Image = ts.types['sensor_msgs/msg/Image']
CompressedImage = ts.types['sensor_msgs/msg/CompressedImage']
Header = ts.types['std_msgs/msg/Header']
Time = ts.types['builtin_interfaces/msg/Time']
String = ts.types['std_msgs/msg/String']


def rgb_pattern(seed):
    """A deterministic RGB frame that differs per seed and per channel."""
    y, x = np.mgrid[0:H, 0:W]
    r = (x * 7 + seed * 31) % 256
    g = (y * 11 + seed * 17) % 256
    b = (x * y + seed * 5) % 256
    return np.stack([r, g, b], axis=-1).astype(np.uint8)


def raw_msg(header, rgb, encoding, pad=0):
    """Encodes `rgb` as `encoding` with `pad` extra bytes per row; returns (msg, expected rgb)."""
    if encoding == 'rgb8':
        px, expect = rgb, rgb
    elif encoding == 'bgr8':
        px, expect = rgb[..., ::-1], rgb
    elif encoding == 'rgba8':
        px, expect = np.concatenate([rgb, np.full((H, W, 1), 200, np.uint8)], -1), rgb
    elif encoding == 'bgra8':
        px, expect = np.concatenate([rgb[..., ::-1], np.full((H, W, 1), 9, np.uint8)], -1), rgb
    elif encoding == 'mono8':
        gray = rgb[..., 1]
        px, expect = gray[..., None], np.repeat(gray[..., None], 3, -1)
    else:
        raise ValueError(encoding)
    ch = px.shape[-1]
    step = W * ch + pad
    rows = np.full((H, step), 0xEE, np.uint8)
    rows[:, : W * ch] = px.reshape(H, W * ch)
    msg = Image(header=header, height=H, width=W, encoding=encoding, is_bigendian=0, step=step,
                data=rows.reshape(-1))
    return msg, expect


def main():
    if OUT.exists():
        for p in ['bag_mcap', 'bag_sqlite3']:
            shutil.rmtree(OUT / p, ignore_errors=True)
    OUT.mkdir(parents=True, exist_ok=True)

    frames = []  # (topic, msgtype, log_time, msg, expected entry)
    t0 = 1_700_000_000_000_000_000
    raw_cases = [('rgb8', 0), ('bgr8', 4), ('mono8', 0), ('rgba8', 0), ('bgra8', 8), ('rgb8', 3)]
    seq = 0

    def header(i):
        return Header(stamp=Time(sec=1_700_000_000 + i, nanosec=1000 * i + 7), frame_id=f'cam_{i}')

    def expected(topic, msgtype, log_time, i, rgb=None, error=None):
        e = {'topic': topic, 'type': msgtype, 'log_time_ns': log_time,
             'stamp_sec': 1_700_000_000 + i, 'stamp_nanosec': 1000 * i + 7, 'frame_id': f'cam_{i}'}
        if rgb is not None:
            e['width'], e['height'] = W, H
            e['rgb_b64'] = base64.b64encode(rgb.tobytes()).decode()
        if error is not None:
            e['error'] = error
        return e

    for enc, pad in raw_cases:
        lt = t0 + seq * 50_000_000
        msg, expect = raw_msg(header(seq), rgb_pattern(seq), enc, pad)
        frames.append(('/cam/image_raw', 'sensor_msgs/msg/Image', lt, msg,
                       expected('/cam/image_raw', 'sensor_msgs/msg/Image', lt, seq, rgb=expect)))
        seq += 1
        if seq == 3:
            # A non-image topic in between: readers must pass it through, filters drop it.
            lt2 = lt + 1
            frames.append(('/chatter', 'std_msgs/msg/String', lt2, String(data='hello'),
                           {'topic': '/chatter', 'type': 'std_msgs/msg/String', 'log_time_ns': lt2,
                            'error': 'type'}))

    # Unknown encoding and a zero-sized image: valid CDR, frames that must be refused.
    lt = t0 + seq * 50_000_000
    yuv = Image(header=header(seq), height=H, width=W, encoding='yuv422', is_bigendian=0, step=W * 2,
                data=np.zeros(W * H * 2, np.uint8))
    frames.append(('/cam/image_raw', 'sensor_msgs/msg/Image', lt, yuv,
                   expected('/cam/image_raw', 'sensor_msgs/msg/Image', lt, seq, error='encoding')))
    seq += 1
    lt = t0 + seq * 50_000_000
    empty = Image(header=header(seq), height=0, width=0, encoding='rgb8', is_bigendian=0, step=0,
                  data=np.zeros(0, np.uint8))
    frames.append(('/cam/image_raw', 'sensor_msgs/msg/Image', lt, empty,
                   expected('/cam/image_raw', 'sensor_msgs/msg/Image', lt, seq, error='size')))
    seq += 1

    # Compressed: PNG is lossless (exact pixels); JPEG is compared with a tolerance.
    for fmt, pil_fmt in [('png', 'PNG'), ('rgb8; jpeg compressed bgr8', 'JPEG')]:
        lt = t0 + seq * 50_000_000
        rgb = rgb_pattern(seq)
        buf = io.BytesIO()
        PilImage.fromarray(rgb).save(buf, pil_fmt, **({'quality': 95} if pil_fmt == 'JPEG' else {}))
        msg = CompressedImage(header=header(seq), format=fmt,
                              data=np.frombuffer(buf.getvalue(), np.uint8))
        # Expected pixels are what an independent decoder (libjpeg via Pillow) makes of the
        # bytes; decoders differ slightly in IDCT and chroma upsampling, hence 'lossy'.
        decoded = np.asarray(PilImage.open(io.BytesIO(buf.getvalue())).convert('RGB'))
        e = expected('/cam/image_raw/compressed', 'sensor_msgs/msg/CompressedImage', lt, seq,
                     rgb=decoded)
        e['lossy'] = pil_fmt == 'JPEG'
        frames.append(('/cam/image_raw/compressed', 'sensor_msgs/msg/CompressedImage', lt, msg, e))
        seq += 1

    for name, plugin in [('bag_mcap', StoragePlugin.MCAP), ('bag_sqlite3', StoragePlugin.SQLITE3)]:
        w = Writer(OUT / name, version=8, storage_plugin=plugin)
        if plugin == StoragePlugin.MCAP:
            # zstd-compressed chunks, as rosbag2's MCAP plugin writes with its zstd profiles.
            w.set_compression(CompressionMode.STORAGE, CompressionFormat.ZSTD)
        with w:
            conns = {}
            for k, (topic, msgtype, lt, msg, _) in enumerate(frames):
                if topic not in conns:
                    conns[topic] = w.add_connection(topic, msgtype, typestore=ts)
                w.write(conns[topic], lt, ts.serialize_cdr(msg, msgtype))
                if plugin == StoragePlugin.MCAP and k % MSGS_PER_CHUNK == MSGS_PER_CHUNK - 1:
                    # rosbags closes chunks at 1 MiB; close them early so that the fixture has
                    # several chunks and a cut file keeps the complete ones.
                    w.storage.close_chunk()

    kept = damage(OUT)
    doc = {'messages': [f[4] for f in frames], 'damaged_intact_prefix': kept}
    (OUT / 'expected.json').write_text(json.dumps(doc, indent=1) + '\n')
    write_coco_gt(OUT)


# COCO categories the synthetic test weights (seed 0) detect often on these frames, so that the
# evaluation has true positives as well as misses.
COCO_CATS = [(87, 'scissors'), (51, 'bowl'), (58, 'hot dog'), (72, 'tv')]
GOOD_SEQS = [0, 1, 2, 3, 4, 5, 8, 9]  # header indices of the frames the replay must segment


def stamp_ns(i):
    return (1_700_000_000 + i) * 1_000_000_000 + 1000 * i + 7


def write_coco_gt(out):
    """coco_gt.json: ground truth for `yolact replay --coco-gt`, matched to frames by stamp.

    Images: every good frame but the last (which stays unmatched), named `<stamp_ns>.png`, except
    one that carries the stamp in a `stamp_ns` field instead; plus one image no frame has. Ids
    run against bag order, so that matching by index would pair different images.
    """
    images, anns = [], []
    for k, i in enumerate(GOOD_SEQS[:-1]):
        img = {'id': 1000 - i, 'width': W, 'height': H, 'file_name': f'{stamp_ns(i)}.png'}
        if i == 8:
            img['file_name'] = 'compressed_png.png'
            img['stamp_ns'] = stamp_ns(i)
        images.append(img)
    images.append({'id': 100, 'width': W, 'height': H, 'file_name': '1600000000000000000.png'})
    regions = [(0, 0, W, H), (0, 0, W // 2, H), (W // 2, 0, W // 2, H), (4, 4, W - 8, H - 8)]
    for img in images:
        for (cat, _), (x, y, w, h) in zip(COCO_CATS, regions):
            # Shift each image's regions a little so that the frames differ.
            dx = (img['id'] % 3)
            w2 = max(1, min(w, W - x - dx))
            anns.append({'id': len(anns) + 1, 'image_id': img['id'], 'category_id': cat,
                         'bbox': [x + dx, y, w2, h], 'area': float(w2 * h), 'iscrowd': 0,
                         'segmentation': [[x + dx, y, x + dx + w2, y, x + dx + w2, y + h,
                                           x + dx, y + h]]})
    doc = {'info': {'description': 'yolact_ros2 replay COCO fixture'},
           'images': images, 'annotations': anns,
           'categories': [{'id': c, 'name': n, 'supercategory': ''} for c, n in COCO_CATS]}
    (out / 'coco_gt.json').write_text(json.dumps(doc, indent=1) + '\n')


def mcap_records(data):
    """(opcode, offset, length) of the top-level records after the 8-byte magic."""
    pos, out = 8, []
    while pos + 9 <= len(data):
        op = data[pos]
        ln = int.from_bytes(data[pos + 1: pos + 9], 'little')
        out.append((op, pos, ln))
        pos += 9 + ln
    return out


def damage(out):
    """Damaged single-file copies: what a recorder killed mid-write leaves behind.

    Returns how many messages (in bag order) each damaged file still holds intact.
    """
    mcap = next((out / 'bag_mcap').glob('*.mcap'))
    data = mcap.read_bytes()
    chunks = [(pos, ln) for op, pos, ln in mcap_records(data) if op == 0x06]
    # Cut in the middle of the third chunk: no summary, no footer, and a partial chunk.
    pos, ln = chunks[2]
    (out / 'truncated.mcap').write_bytes(data[: pos + ln // 2])
    mcap_kept = 2 * MSGS_PER_CHUNK

    db = next((out / 'bag_sqlite3').glob('*.db3'))
    raw = bytearray(db.read_bytes())
    con = sqlite3.connect(db)
    page = con.execute('PRAGMA page_size').fetchone()[0]
    con.close()
    # Overwrite the last page with garbage, as a torn write leaves it.
    raw[-page:] = b'\xff' * page
    dst = out / 'truncated.db3'
    dst.write_bytes(bytes(raw))
    # Count what sqlite itself can still read, in the reader's order, one row per query
    # (Python's cursor steps one row ahead, so a plain loop would under-count by one).
    con = sqlite3.connect(f'file:{dst}?mode=ro', uri=True)
    db_kept, cursor = 0, (-(2**63), -(2**63))
    while True:
        try:
            row = con.execute(
                'SELECT timestamp, id, length(data) FROM messages WHERE timestamp >= ?1 '
                'AND (timestamp > ?1 OR id > ?2) ORDER BY timestamp, id LIMIT 1', cursor).fetchone()
        except sqlite3.DatabaseError:
            break
        if row is None:
            raise SystemExit('damaging the db3 did not make it unreadable; change the damage')
        db_kept += 1
        cursor = row[:2]
    con.close()
    return {'truncated.mcap': mcap_kept, 'truncated.db3': db_kept}


if __name__ == '__main__':
    if '--coco-gt-only' in sys.argv:
        OUT = Path(__file__).resolve().parent.parent / 'tests/fixtures/bags'
        write_coco_gt(OUT)
    else:
        main()
