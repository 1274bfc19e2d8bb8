/* SPDX-License-Identifier: GPL-2.0 */
/*
 * virtio_udc: what the virtio side (vudc_core.c) and the UDC side
 * (vudc_udc.c) share. The locking and the ways of waiting for a command are
 * described at the top of vudc_core.c.
 */

#ifndef _VUDC_H
#define _VUDC_H

#include <linux/completion.h>
#include <linux/list.h>
#include <linux/mutex.h>
#include <linux/spinlock.h>
#include <linux/usb/gadget.h>
#include <linux/virtio.h>
#include <linux/virtio_udc.h>
#include <linux/workqueue.h>

/* Event buffers kept posted on the eventq. */
#define VUDC_EVENT_BUFS		16

/* Segments that fit in the request itself, next to its header. */
#define VUDC_INLINE_SEGS	4

#define VUDC_SEGS_PER_PAGE	(PAGE_SIZE / sizeof(struct virtio_udc_seg))

/* How long a command may take before the device is considered gone. */
#define VUDC_CMD_TIMEOUT_MS	2000

/* How often a reset device is asked whether a back end serves it again. */
#define VUDC_RECOVERY_POLL_MS	20

struct virtio_udc;

/**
 * struct virtio_udc_ep - one endpoint
 * @ep: the gadget core's view
 * @vudc: the controller
 * @queue: requests queued on this endpoint, oldest first
 * @addr: bEndpointAddress from the configuration space (0 for ep0)
 * @type: USB transfer type while enabled
 * @enabled: EP_ENABLE succeeded and no EP_DISABLE followed
 * @halted: the endpoint is halted, by the gadget or by the host
 * @wedged: the gadget wedged the endpoint
 * @name: "ep0", "ep1in", "ep2out", ...
 */
struct virtio_udc_ep {
	struct usb_ep ep;
	struct virtio_udc *vudc;
	struct list_head queue;
	u8 addr;
	u8 type;
	bool enabled;
	bool halted;
	bool wedged;
	char name[12];
};

/**
 * struct virtio_udc_req - one request
 * @req: the gadget core's view
 * @queue: entry in the endpoint's queue
 * @backlog: entry in the controller's backlog while the xferq is full
 * @ep: the endpoint it is queued on
 * @tag: identifies it to the device (XFER_CANCEL)
 * @in_flight: the device owns it
 * @is_in: data moves to the host
 * @mapped: the driver mapped it and unmaps it on completion
 * @seg_pages: pages holding the segments when they do not fit in @wire
 * @nr_seg_pages: number of @seg_pages
 * @out_sgs: the device-readable part when @seg_pages are used: the header,
 *	then one entry per page (@nr_seg_pages + 1 entries)
 * @wire: header and the first segments, read by the device
 * @wire.hdr: the transfer request header
 * @wire.segs: segments that fit next to the header
 * @status: written by the device, in a cacheline of its own (the last)
 *
 * On a platform without coherent DMA, a cacheline the device writes must
 * hold nothing the CPU writes while the device owns it, or a write-back
 * of that line would undo the device's write: hence @status starts a
 * cacheline and the structure's alignment pads the rest of it.
 */
struct virtio_udc_req {
	struct usb_request req;
	struct list_head queue;
	struct list_head backlog;
	struct virtio_udc_ep *ep;
	u64 tag;
	bool in_flight;
	bool is_in;
	bool mapped;
	void **seg_pages;
	unsigned int nr_seg_pages;
	struct scatterlist *out_sgs;
	struct {
		struct virtio_udc_xfer_req hdr;
		struct virtio_udc_seg segs[VUDC_INLINE_SEGS];
	} wire;
	struct virtio_udc_xfer_status status ____cacheline_aligned;
};

/*
 * The command buffers: one for each way of waiting, and one for the
 * recovery work's question whether a back end serves the device again.
 */
enum {
	VUDC_CMD_ATOMIC,
	VUDC_CMD_SLEEP,
	VUDC_CMD_PROBE,
	VUDC_NUM_CMDS,
};

/**
 * struct virtio_udc_cmd - one command buffer
 * @req: read by the device
 * @done: signalled when the response has been collected
 * @len: used length the device reported
 * @finished: the response has been collected
 * @resp: written by the device, in a cacheline of its own (see
 *	struct virtio_udc_req)
 */
struct virtio_udc_cmd {
	struct virtio_udc_ctrl_req req;
	struct completion done;
	unsigned int len;
	bool finished;
	struct virtio_udc_ctrl_resp resp ____cacheline_aligned;
};

/**
 * struct virtio_udc - the controller
 * @gadget: the gadget it provides
 * @driver: the bound gadget driver, NULL when none
 * @vdev: the virtio device
 * @dma_dev: the device that DMA-maps request buffers (the transport's)
 * @lock: protects everything below and the virtqueues
 * @cvq: controlq
 * @evq: eventq
 * @xvq: xferq
 * @cmds: command buffers, VUDC_CMD_*
 * @cmd_mutex: serialises the commands of callers that sleep
 * @events: eventq buffers, an allocation of their own: only the device
 *	writes them
 * @eps: ep0 first, then the endpoints in configuration-space order
 * @num_eps: valid entries in @eps
 * @backlog: requests waiting for room on the xferq, oldest first
 * @next_tag: tag of the next request
 * @max_segments: from the configuration space
 * @flags: configuration flags
 * @ep0_in: direction of the pending control transfer's data stage
 * @pullup: the gadget wants to be connected
 * @dead: the device stopped answering; nothing more goes to it
 * @epoch: counts the times the device was given up for dead
 * @recovering: the device is being reset after it needed one
 * @stopping: the driver is unbinding or the system suspending; no
 *	recovery is started and a recovery under way gives up
 * @reset_work: resets the device when it needs a reset
 */
struct virtio_udc {
	struct usb_gadget gadget;
	struct usb_gadget_driver *driver;
	struct virtio_device *vdev;
	struct device *dma_dev;
	spinlock_t lock;	/* see the comment at the top of the file */
	struct virtqueue *cvq;
	struct virtqueue *evq;
	struct virtqueue *xvq;
	struct virtio_udc_cmd *cmds;
	struct mutex cmd_mutex;	/* serialises vudc_cmd_sleep() */
	struct virtio_udc_event *events;
	struct virtio_udc_ep eps[VIRTIO_UDC_MAX_EPS];
	unsigned int num_eps;
	struct list_head backlog;
	u64 next_tag;
	u32 max_segments;
	u32 flags;
	bool ep0_in;
	bool pullup;
	bool dead;
	unsigned int epoch;
	bool recovering;
	bool stopping;
	struct work_struct reset_work;
};

static inline struct virtio_udc *gadget_to_vudc(struct usb_gadget *g)
{
	return container_of(g, struct virtio_udc, gadget);
}

static inline struct virtio_udc_ep *usb_ep_to_vep(struct usb_ep *ep)
{
	return container_of(ep, struct virtio_udc_ep, ep);
}

static inline struct virtio_udc_req *usb_req_to_vreq(struct usb_request *req)
{
	return container_of(req, struct virtio_udc_req, req);
}

static inline bool vep_is_ep0(struct virtio_udc_ep *vep)
{
	return vep == &vep->vudc->eps[0];
}

/* vudc_udc.c */
void vudc_giveback(struct virtio_udc *vudc, struct virtio_udc_req *vreq, int status);
void vudc_nuke_waiting(struct virtio_udc *vudc, struct virtio_udc_ep *vep, int status);
void vudc_bus_gone(struct virtio_udc *vudc);
int vudc_init_eps(struct virtio_udc *vudc);

/* vudc_core.c */
void vudc_drain_xferq(struct virtio_udc *vudc);
int vudc_submit(struct virtio_udc *vudc, struct virtio_udc_req *vreq);
int vudc_cmd_atomic(struct virtio_udc *vudc, const struct virtio_udc_ctrl_req *req,
		    u32 *value);
int vudc_simple_cmd(struct virtio_udc *vudc, u16 opcode, u8 ep, u32 value, u32 *result);
int vudc_cmd_sleep(struct virtio_udc *vudc, u16 opcode, u32 value, u32 *result);

extern const struct usb_gadget_ops virtio_udc_gadget_ops;

#endif /* _VUDC_H */
