//! The virtio hot path every request takes: pop one available descriptor chain (bounds- and
//! order-checked by `wisp_devices::virtio::chain::pop_chain`, as every device does) and put it
//! back on the used ring. The queue is laid out in guest memory by virtio-queue's mock driver
//! (a guest-side builder), with a two-descriptor chain: a device-readable header and a
//! device-writable buffer, like a block read.

use criterion::{criterion_group, criterion_main, Criterion};
use std::hint::black_box;
use virtio_bindings::bindings::virtio_ring::VRING_DESC_F_WRITE;
use virtio_queue::desc::{split::Descriptor as SplitDescriptor, RawDescriptor};
use virtio_queue::mock::MockSplitQueue;
use virtio_queue::{Queue, QueueT};
use vm_memory::{GuestAddress, GuestMemoryMmap};
use wisp_devices::virtio::chain::{add_used, pop_chain};

fn pop_push(c: &mut Criterion) {
    let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 4 << 20)]).expect("memory");
    let vq = MockSplitQueue::new(&mem, 256);
    let descs = [
        RawDescriptor::from(SplitDescriptor::new(0x10_0000, 16, 0, 0)),
        RawDescriptor::from(SplitDescriptor::new(
            0x10_1000,
            4096,
            VRING_DESC_F_WRITE as u16,
            0,
        )),
    ];
    vq.build_desc_chain(&descs).expect("chain");
    let mut queue: Queue = vq.create_queue().expect("queue");
    c.bench_function("virtio_queue/pop_checked_chain_and_add_used", |b| {
        b.iter(|| {
            // The same chain again: rewind instead of having a driver refill the ring.
            queue.set_next_avail(0);
            let (head, chain) = pop_chain(&mut queue, &mem).expect("available");
            black_box(chain.expect("valid"));
            add_used(&mut queue, &mem, head, 4096);
        })
    });
}

criterion_group!(benches, pop_push);
criterion_main!(benches);
