// SPDX-License-Identifier: GPL-2.0
/*
 * A USB device controller on a virtio device: the UDC side
 *
 * What the gadget core calls: the endpoint operations (enable, disable,
 * queue, dequeue, halt), the gadget operations (pullup, start, stop,
 * wakeup) and the endpoints built from the configuration space. Requests
 * become transfers on the xferq through vudc_submit(); commands go through
 * vudc_core.c, whose top comment describes the locking.
 */

#include <linux/device.h>
#include <linux/dma-mapping.h>
#include <linux/kernel.h>
#include <linux/scatterlist.h>
#include <linux/slab.h>
#include <linux/usb/ch9.h>
#include <linux/usb/gadget.h>
#include <linux/virtio.h>
#include <linux/virtio_config.h>

#include "vudc.h"
#include "vudc_trace.h"

static void vudc_free_seg_pages(struct virtio_udc_req *vreq)
{
	unsigned int i;

	for (i = 0; i < vreq->nr_seg_pages; i++)
		free_page((unsigned long)vreq->seg_pages[i]);
	kfree(vreq->seg_pages);
	kfree(vreq->out_sgs);
	vreq->seg_pages = NULL;
	vreq->out_sgs = NULL;
	vreq->nr_seg_pages = 0;
}

/*
 * Room for @nents segments, with the gadget driver's @gfp: pages for the
 * segments when they do not fit next to the header. Called before the
 * request is mapped, so @nents is an upper bound.
 */
static int vudc_alloc_seg_pages(struct virtio_udc_req *vreq, unsigned int nents, gfp_t gfp)
{
	unsigned int pages, i;

	if (nents <= VUDC_INLINE_SEGS)
		return 0;
	pages = DIV_ROUND_UP(nents, VUDC_SEGS_PER_PAGE);
	vreq->seg_pages = kcalloc(pages, sizeof(*vreq->seg_pages), gfp);
	vreq->out_sgs = kmalloc_array(pages + 1, sizeof(*vreq->out_sgs), gfp);
	if (!vreq->seg_pages || !vreq->out_sgs)
		goto nomem;
	for (i = 0; i < pages; i++) {
		vreq->seg_pages[i] = (void *)__get_free_page(gfp);
		if (!vreq->seg_pages[i])
			goto nomem;
		vreq->nr_seg_pages++;
	}
	return 0;

nomem:
	vudc_free_seg_pages(vreq);
	return -ENOMEM;
}

/*
 * Give a finished request back to its gadget driver. Called with the lock
 * held; drops it around the completion callback, which may queue again.
 */
void vudc_giveback(struct virtio_udc *vudc, struct virtio_udc_req *vreq, int status)
	__must_hold(&vudc->lock)
{
	struct virtio_udc_ep *vep = vreq->ep;

	list_del_init(&vreq->queue);
	list_del_init(&vreq->backlog);
	vreq->in_flight = false;
	vudc_free_seg_pages(vreq);
	if (vreq->mapped) {
		usb_gadget_unmap_request_by_dev(vudc->dma_dev, &vreq->req, vreq->is_in);
		vreq->mapped = false;
	}
	if (vreq->req.status == -EINPROGRESS)
		vreq->req.status = status;
	trace_virtio_udc_giveback(vep, vreq, 0);

	spin_unlock(&vudc->lock);
	usb_gadget_giveback_request(&vep->ep, &vreq->req);
	spin_lock(&vudc->lock);
}

/* Complete every request on @vep that the device does not own. */
void vudc_nuke_waiting(struct virtio_udc *vudc, struct virtio_udc_ep *vep, int status)
	__must_hold(&vudc->lock)
{
	struct virtio_udc_req *vreq, *tmp;

restart:
	list_for_each_entry_safe(vreq, tmp, &vep->queue, queue) {
		if (vreq->in_flight && !vudc->dead)
			continue;
		vudc_giveback(vudc, vreq, status);
		/* The callback may have queued or dequeued: walk again. */
		goto restart;
	}
}

/*
 * Collect finished transfers from the xferq. Completions the device
 * promises before a command response or an event (EP_DISABLE, XFER_CANCEL,
 * BUS_RESET, DISCONNECT) are collected here too, before acting on those.
 */

/* --------------------------------------------------------------------- */
/* Endpoint operations                                                   */

static int virtio_udc_ep_enable(struct usb_ep *ep, const struct usb_endpoint_descriptor *desc)
{
	struct virtio_udc_ep *vep = usb_ep_to_vep(ep);
	struct virtio_udc *vudc = vep->vudc;
	struct virtio_udc_ctrl_req req = {};
	unsigned long flags;
	u8 type, mult = 0, burst = 0;
	u16 maxp;
	int ret;

	if (!desc || vep_is_ep0(vep) || desc->bDescriptorType != USB_DT_ENDPOINT)
		return -EINVAL;
	if (desc->bEndpointAddress != vep->addr)
		return -EINVAL;
	maxp = usb_endpoint_maxp(desc);
	if (!maxp || maxp > ep->maxpacket_limit)
		return -ERANGE;
	type = usb_endpoint_type(desc);

	spin_lock_irqsave(&vudc->lock, flags);
	if (!vudc->driver || vudc->gadget.speed == USB_SPEED_UNKNOWN) {
		ret = -ESHUTDOWN;
		goto out;
	}
	if (vep->enabled) {
		ret = -EBUSY;
		goto out;
	}

	if (vudc->gadget.speed >= USB_SPEED_SUPER && ep->comp_desc) {
		burst = ep->comp_desc->bMaxBurst;
		if (type == USB_ENDPOINT_XFER_ISOC)
			mult = USB_SS_MULT(ep->comp_desc->bmAttributes) - 1;
	} else if (vudc->gadget.speed == USB_SPEED_HIGH &&
		   (type == USB_ENDPOINT_XFER_ISOC || type == USB_ENDPOINT_XFER_INT)) {
		mult = usb_endpoint_maxp_mult(desc) - 1;
	}

	req.opcode = cpu_to_le16(VIRTIO_UDC_CMD_EP_ENABLE);
	req.ep = vep->addr;
	req.ep_type = type;
	req.max_packet = cpu_to_le16(maxp);
	req.interval = desc->bInterval;
	req.max_burst = burst;
	req.mult = mult;
	ret = vudc_cmd_atomic(vudc, &req, NULL);
	if (ret) {
		dev_dbg(&vudc->vdev->dev, "%s: enable failed: %d\n", ep->name, ret);
		goto out;
	}

	vep->enabled = true;
	vep->halted = false;
	vep->wedged = false;
	vep->type = type;
	ep->desc = desc;
	ep->maxpacket = maxp;
	ep->mult = mult + 1;
	ep->maxburst = burst + 1;
out:
	spin_unlock_irqrestore(&vudc->lock, flags);
	return ret;
}

/* Called with the lock held: the endpoint is disabled on the device too. */
static void vudc_ep_disabled(struct virtio_udc *vudc, struct virtio_udc_ep *vep)
	__must_hold(&vudc->lock)
{
	vep->enabled = false;
	vep->halted = false;
	vep->wedged = false;
	vep->ep.desc = NULL;
}

static int virtio_udc_ep_disable(struct usb_ep *ep)
{
	struct virtio_udc_ep *vep = usb_ep_to_vep(ep);
	struct virtio_udc *vudc = vep->vudc;
	unsigned long flags;
	int ret;

	if (vep_is_ep0(vep))
		return -EINVAL;

	spin_lock_irqsave(&vudc->lock, flags);
	/*
	 * The device completes the endpoint's requests before it answers,
	 * so after the drain only requests it never saw are left.
	 */
	ret = vudc_simple_cmd(vudc, VIRTIO_UDC_CMD_EP_DISABLE, vep->addr, 0, NULL);
	if (!vudc->dead)
		vudc_drain_xferq(vudc);
	vudc_nuke_waiting(vudc, vep, -ESHUTDOWN);
	vudc_ep_disabled(vudc, vep);
	spin_unlock_irqrestore(&vudc->lock, flags);

	return ret == -ESHUTDOWN ? 0 : ret;
}

static struct usb_request *virtio_udc_alloc_request(struct usb_ep *ep, gfp_t gfp)
{
	struct virtio_udc_req *vreq;

	vreq = kzalloc(sizeof(*vreq), gfp);
	if (!vreq)
		return NULL;
	INIT_LIST_HEAD(&vreq->queue);
	INIT_LIST_HEAD(&vreq->backlog);
	vreq->ep = usb_ep_to_vep(ep);
	return &vreq->req;
}

static void virtio_udc_free_request(struct usb_ep *ep, struct usb_request *req)
{
	struct virtio_udc_req *vreq = usb_req_to_vreq(req);

	WARN_ON(!list_empty(&vreq->queue));
	kfree(vreq);
}

/*
 * Fill in the segment list from the request's DMA mapping, in the room
 * vudc_alloc_seg_pages() made for at least as many segments.
 */
static int vudc_build_segs(struct virtio_udc *vudc, struct virtio_udc_req *vreq)
{
	struct usb_request *req = &vreq->req;
	struct virtio_udc_seg *seg;
	struct scatterlist *sg;
	unsigned int num_segs, pages, i;

	if (!req->length)
		num_segs = 0;
	else if (req->num_mapped_sgs)
		num_segs = req->num_mapped_sgs;
	else
		num_segs = 1;

	if (num_segs > vudc->max_segments)
		return -EINVAL;

	if (num_segs <= VUDC_INLINE_SEGS) {
		/* The mapping merged entries: the header has room for them. */
		vudc_free_seg_pages(vreq);
	} else {
		pages = DIV_ROUND_UP(num_segs, VUDC_SEGS_PER_PAGE);
		if (WARN_ON_ONCE(pages > vreq->nr_seg_pages))
			return -EINVAL;
		/* Only the pages in use go to the device. */
		sg_init_table(vreq->out_sgs, pages + 1);
		sg_set_buf(&vreq->out_sgs[0], &vreq->wire.hdr, sizeof(vreq->wire.hdr));
		for (i = 0; i < pages; i++)
			sg_set_buf(&vreq->out_sgs[i + 1], vreq->seg_pages[i],
				   min_t(unsigned int, num_segs - i * VUDC_SEGS_PER_PAGE,
					 VUDC_SEGS_PER_PAGE) * sizeof(struct virtio_udc_seg));
	}

	if (num_segs == 1 && !req->num_mapped_sgs) {
		vreq->wire.segs[0].addr = cpu_to_le64(req->dma);
		vreq->wire.segs[0].len = cpu_to_le32(req->length);
		vreq->wire.segs[0].reserved = 0;
	} else if (num_segs) {
		for_each_sg(req->sg, sg, num_segs, i) {
			if (vreq->nr_seg_pages) {
				seg = vreq->seg_pages[i / VUDC_SEGS_PER_PAGE];
				seg += i % VUDC_SEGS_PER_PAGE;
			} else {
				seg = &vreq->wire.segs[i];
			}
			seg->addr = cpu_to_le64(sg_dma_address(sg));
			seg->len = cpu_to_le32(sg_dma_len(sg));
			seg->reserved = 0;
		}
	}
	vreq->wire.hdr.num_segs = cpu_to_le32(num_segs);
	return 0;
}

static int virtio_udc_ep_queue(struct usb_ep *ep, struct usb_request *req, gfp_t gfp)
{
	struct virtio_udc_ep *vep = usb_ep_to_vep(ep);
	struct virtio_udc_req *vreq = usb_req_to_vreq(req);
	struct virtio_udc *vudc = vep->vudc;
	struct virtio_udc_xfer_req *hdr = &vreq->wire.hdr;
	unsigned long flags;
	unsigned int nents;
	u8 addr;
	int ret;

	if (!req->complete || !list_empty(&vreq->queue))
		return -EINVAL;
	if (req->length && !req->buf && !req->num_sgs)
		return -EINVAL;

	/*
	 * Allocate with the caller's gfp before taking the lock: the
	 * mapping can only merge entries, so the CPU-side count is enough.
	 */
	nents = !req->length ? 0 : req->num_sgs ? req->num_sgs : 1;
	ret = vudc_alloc_seg_pages(vreq, min(nents, vudc->max_segments), gfp);
	if (ret)
		return ret;

	spin_lock_irqsave(&vudc->lock, flags);
	if (!vudc->driver || vudc->dead || vudc->recovering ||
	    vudc->gadget.speed == USB_SPEED_UNKNOWN) {
		ret = -ESHUTDOWN;
		goto free;
	}
	if (vep_is_ep0(vep)) {
		addr = vudc->ep0_in ? USB_DIR_IN : USB_DIR_OUT;
	} else {
		if (!vep->enabled) {
			ret = -ESHUTDOWN;
			goto free;
		}
		addr = vep->addr;
	}

	vreq->ep = vep;
	vreq->is_in = addr & USB_DIR_IN;
	req->status = -EINPROGRESS;
	req->actual = 0;

	ret = usb_gadget_map_request_by_dev(vudc->dma_dev, req, vreq->is_in);
	if (ret)
		goto free;
	vreq->mapped = true;

	ret = vudc_build_segs(vudc, vreq);
	if (ret)
		goto unmap;

	hdr->opcode = cpu_to_le16(VIRTIO_UDC_XFER_OP_TRANSFER);
	hdr->ep = addr;
	hdr->flags = (vreq->is_in && req->zero) ? VIRTIO_UDC_XFER_F_ZERO : 0;
	hdr->length = cpu_to_le32(req->length);
	hdr->reserved = 0;
	vreq->tag = vudc->next_tag++;
	hdr->tag = cpu_to_le64(vreq->tag);

	list_add_tail(&vreq->queue, &vep->queue);
	/* Keep submission order: nothing overtakes the backlog. */
	if (list_empty(&vudc->backlog)) {
		ret = vudc_submit(vudc, vreq);
		if (!ret) {
			virtqueue_kick(vudc->xvq);
			goto out;
		}
		if (ret != -ENOSPC) {
			list_del_init(&vreq->queue);
			goto unmap;
		}
	}
	list_add_tail(&vreq->backlog, &vudc->backlog);
	ret = 0;
	goto out;

unmap:
	usb_gadget_unmap_request_by_dev(vudc->dma_dev, req, vreq->is_in);
	vreq->mapped = false;
free:
	vudc_free_seg_pages(vreq);
out:
	trace_virtio_udc_ep_queue(vep, vreq, ret);
	spin_unlock_irqrestore(&vudc->lock, flags);
	return ret;
}

static int virtio_udc_ep_dequeue(struct usb_ep *ep, struct usb_request *req)
{
	struct virtio_udc_ep *vep = usb_ep_to_vep(ep);
	struct virtio_udc_req *vreq = usb_req_to_vreq(req), *iter;
	struct virtio_udc *vudc = vep->vudc;
	struct virtio_udc_ctrl_req cmd = {};
	unsigned long flags;
	bool found = false;
	int ret = 0;

	spin_lock_irqsave(&vudc->lock, flags);
	list_for_each_entry(iter, &vep->queue, queue) {
		if (iter == vreq) {
			found = true;
			break;
		}
	}
	if (!found) {
		ret = -EINVAL;
		goto out;
	}
	trace_virtio_udc_ep_dequeue(vep, vreq, 0);

	if (!vreq->in_flight) {
		vudc_giveback(vudc, vreq, -ECONNRESET);
		goto out;
	}

	cmd.opcode = cpu_to_le16(VIRTIO_UDC_CMD_XFER_CANCEL);
	cmd.ep = vreq->wire.hdr.ep;
	cmd.tag = cpu_to_le64(vreq->tag);
	ret = vudc_cmd_atomic(vudc, &cmd, NULL);
	/*
	 * CANCELLED, or the completion that beat the cancel (NOT_FOUND), is on
	 * the used ring now; a dead device had its requests taken back.
	 */
	if (!vudc->dead)
		vudc_drain_xferq(vudc);
	ret = 0;
out:
	spin_unlock_irqrestore(&vudc->lock, flags);
	return ret;
}

static int vudc_set_halt(struct usb_ep *ep, int value, bool wedge)
{
	struct virtio_udc_ep *vep = usb_ep_to_vep(ep);
	struct virtio_udc *vudc = vep->vudc;
	unsigned long flags;
	u32 arg = value ? (wedge ? 2 : 1) : 0;
	int ret;

	spin_lock_irqsave(&vudc->lock, flags);
	if (!vudc->driver) {
		ret = -ESHUTDOWN;
		goto out;
	}
	if (vep_is_ep0(vep)) {
		/* A protocol stall of the pending control transfer. */
		ret = value ? vudc_simple_cmd(vudc, VIRTIO_UDC_CMD_EP_SET_HALT, 0, 1, NULL) : 0;
		goto out;
	}
	if (!vep->enabled) {
		ret = -EINVAL;
		goto out;
	}
	ret = vudc_simple_cmd(vudc, VIRTIO_UDC_CMD_EP_SET_HALT, vep->addr, arg, NULL);
	if (!ret) {
		vep->halted = !!value;
		vep->wedged = value && wedge;
	}
out:
	spin_unlock_irqrestore(&vudc->lock, flags);
	return ret;
}

static int virtio_udc_ep_set_halt(struct usb_ep *ep, int value)
{
	return vudc_set_halt(ep, value, false);
}

static int virtio_udc_ep_set_wedge(struct usb_ep *ep)
{
	return vudc_set_halt(ep, 1, true);
}

static int virtio_udc_ep_fifo_status(struct usb_ep *ep)
{
	struct virtio_udc_ep *vep = usb_ep_to_vep(ep);
	struct virtio_udc *vudc = vep->vudc;
	unsigned long flags;
	u32 bytes = 0;
	int ret;

	spin_lock_irqsave(&vudc->lock, flags);
	ret = vudc_simple_cmd(vudc, VIRTIO_UDC_CMD_EP_FIFO_STATUS, vep->addr, 0, &bytes);
	spin_unlock_irqrestore(&vudc->lock, flags);
	if (ret)
		return ret;
	return min_t(u32, bytes, INT_MAX);
}

static void virtio_udc_ep_fifo_flush(struct usb_ep *ep)
{
	struct virtio_udc_ep *vep = usb_ep_to_vep(ep);
	struct virtio_udc *vudc = vep->vudc;
	unsigned long flags;

	spin_lock_irqsave(&vudc->lock, flags);
	vudc_simple_cmd(vudc, VIRTIO_UDC_CMD_EP_FIFO_FLUSH, vep->addr, 0, NULL);
	spin_unlock_irqrestore(&vudc->lock, flags);
}

static const struct usb_ep_ops virtio_udc_ep_ops = {
	.enable		= virtio_udc_ep_enable,
	.disable	= virtio_udc_ep_disable,
	.alloc_request	= virtio_udc_alloc_request,
	.free_request	= virtio_udc_free_request,
	.queue		= virtio_udc_ep_queue,
	.dequeue	= virtio_udc_ep_dequeue,
	.set_halt	= virtio_udc_ep_set_halt,
	.set_wedge	= virtio_udc_ep_set_wedge,
	.fifo_status	= virtio_udc_ep_fifo_status,
	.fifo_flush	= virtio_udc_ep_fifo_flush,
};

/* --------------------------------------------------------------------- */
/* Gadget operations                                                     */

static int virtio_udc_get_frame(struct usb_gadget *gadget)
{
	struct virtio_udc *vudc = gadget_to_vudc(gadget);
	unsigned long flags;
	u32 frame = 0;
	int ret;

	spin_lock_irqsave(&vudc->lock, flags);
	ret = vudc_simple_cmd(vudc, VIRTIO_UDC_CMD_GET_FRAME, 0, 0, &frame);
	spin_unlock_irqrestore(&vudc->lock, flags);
	return ret ? ret : (int)(frame & 0x7ff);
}

static int virtio_udc_wakeup(struct usb_gadget *gadget)
{
	struct virtio_udc *vudc = gadget_to_vudc(gadget);
	unsigned long flags;
	int ret;

	if (!(vudc->flags & VIRTIO_UDC_CONFIG_F_REMOTE_WAKEUP))
		return -EOPNOTSUPP;
	spin_lock_irqsave(&vudc->lock, flags);
	ret = vudc_simple_cmd(vudc, VIRTIO_UDC_CMD_WAKEUP, 0, 0, NULL);
	spin_unlock_irqrestore(&vudc->lock, flags);
	return ret;
}

static int virtio_udc_set_selfpowered(struct usb_gadget *gadget, int is_selfpowered)
{
	struct virtio_udc *vudc = gadget_to_vudc(gadget);
	unsigned long flags;
	int ret;

	spin_lock_irqsave(&vudc->lock, flags);
	ret = vudc_simple_cmd(vudc, VIRTIO_UDC_CMD_SET_SELFPOWERED, 0, !!is_selfpowered, NULL);
	if (!ret)
		gadget->is_selfpowered = !!is_selfpowered;
	spin_unlock_irqrestore(&vudc->lock, flags);
	return ret;
}

/* Forget the bus: every endpoint but ep0 is disabled on the device. */
void vudc_bus_gone(struct virtio_udc *vudc)
	__must_hold(&vudc->lock)
{
	unsigned int i;

	if (!vudc->dead)
		vudc_drain_xferq(vudc);
	for (i = 0; i < vudc->num_eps; i++)
		vudc_nuke_waiting(vudc, &vudc->eps[i], -ESHUTDOWN);
	for (i = 1; i < vudc->num_eps; i++)
		vudc_ep_disabled(vudc, &vudc->eps[i]);
}

/* The UDC core calls this with its connect_lock mutex held: it may sleep. */
static int virtio_udc_pullup(struct usb_gadget *gadget, int is_on)
{
	struct virtio_udc *vudc = gadget_to_vudc(gadget);
	unsigned long flags;
	int ret;

	ret = vudc_cmd_sleep(vudc, VIRTIO_UDC_CMD_PULLUP, !!is_on, NULL);
	spin_lock_irqsave(&vudc->lock, flags);
	if (!ret)
		vudc->pullup = !!is_on;
	if (!is_on) {
		/* The device completed the queued requests with SHUTDOWN. */
		vudc_bus_gone(vudc);
		vudc->gadget.speed = USB_SPEED_UNKNOWN;
	}
	spin_unlock_irqrestore(&vudc->lock, flags);
	return is_on ? ret : 0;
}

static int virtio_udc_udc_start(struct usb_gadget *gadget, struct usb_gadget_driver *driver)
{
	struct virtio_udc *vudc = gadget_to_vudc(gadget);
	unsigned long flags;

	spin_lock_irqsave(&vudc->lock, flags);
	vudc->driver = driver;
	spin_unlock_irqrestore(&vudc->lock, flags);
	return 0;
}

static int virtio_udc_udc_stop(struct usb_gadget *gadget)
{
	struct virtio_udc *vudc = gadget_to_vudc(gadget);
	unsigned long flags;

	spin_lock_irqsave(&vudc->lock, flags);
	vudc->driver = NULL;
	spin_unlock_irqrestore(&vudc->lock, flags);
	return 0;
}

const struct usb_gadget_ops virtio_udc_gadget_ops = {
	.get_frame		= virtio_udc_get_frame,
	.wakeup			= virtio_udc_wakeup,
	.set_selfpowered	= virtio_udc_set_selfpowered,
	.pullup			= virtio_udc_pullup,
	.udc_start		= virtio_udc_udc_start,
	.udc_stop		= virtio_udc_udc_stop,
};

int vudc_init_eps(struct virtio_udc *vudc)
{
	struct virtio_device *vdev = vudc->vdev;
	struct usb_gadget *gadget = &vudc->gadget;
	unsigned int i, off;
	u8 num_eps;

	num_eps = virtio_cread8(vdev, offsetof(struct virtio_udc_config, num_eps));
	if (num_eps < 1 || num_eps > VIRTIO_UDC_MAX_EPS) {
		dev_err(&vdev->dev, "bad endpoint count %u\n", num_eps);
		return -EINVAL;
	}

	INIT_LIST_HEAD(&gadget->ep_list);
	for (i = 0; i < num_eps; i++) {
		struct virtio_udc_ep *vep = &vudc->eps[i];
		struct usb_ep *ep = &vep->ep;
		u8 addr, caps;
		u16 limit;

		off = offsetof(struct virtio_udc_config, eps[i]);
		addr = virtio_cread8(vdev, off + offsetof(struct virtio_udc_ep_cap, addr));
		caps = virtio_cread8(vdev, off + offsetof(struct virtio_udc_ep_cap, caps));
		limit = virtio_cread16(vdev, off +
				       offsetof(struct virtio_udc_ep_cap, max_packet_limit));

		if (i == 0 && (addr != 0 || caps != VIRTIO_UDC_EP_CAP_CONTROL)) {
			dev_err(&vdev->dev, "entry 0 is not ep0\n");
			return -EINVAL;
		}
		if (i > 0 && (!(addr & USB_ENDPOINT_NUMBER_MASK) ||
			      (addr & ~(USB_DIR_IN | USB_ENDPOINT_NUMBER_MASK)) || !caps ||
			      (caps & VIRTIO_UDC_EP_CAP_CONTROL) || !limit)) {
			dev_err(&vdev->dev, "bad endpoint entry %u: addr %#x caps %#x limit %u\n",
				i, addr, caps, limit);
			return -EINVAL;
		}

		vep->vudc = vudc;
		vep->addr = addr;
		INIT_LIST_HEAD(&vep->queue);
		ep->ops = &virtio_udc_ep_ops;
		ep->name = vep->name;

		if (i == 0) {
			strscpy(vep->name, "ep0", sizeof(vep->name));
			ep->caps.type_control = true;
			ep->caps.dir_in = true;
			ep->caps.dir_out = true;
			usb_ep_set_maxpacket_limit(ep, 512);
			ep->maxpacket = 64;
			gadget->ep0 = ep;
			continue;
		}

		snprintf(vep->name, sizeof(vep->name), "ep%u%s", addr & USB_ENDPOINT_NUMBER_MASK,
			 addr & USB_DIR_IN ? "in" : "out");
		ep->caps.type_iso = !!(caps & VIRTIO_UDC_EP_CAP_ISO);
		ep->caps.type_bulk = !!(caps & VIRTIO_UDC_EP_CAP_BULK);
		ep->caps.type_int = !!(caps & VIRTIO_UDC_EP_CAP_INT);
		ep->caps.dir_in = !!(addr & USB_DIR_IN);
		ep->caps.dir_out = !(addr & USB_DIR_IN);
		usb_ep_set_maxpacket_limit(ep, limit & 0x7ff);
		list_add_tail(&ep->ep_list, &gadget->ep_list);
	}
	vudc->num_eps = num_eps;
	return 0;
}
