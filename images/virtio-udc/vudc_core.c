// SPDX-License-Identifier: GPL-2.0
/*
 * A USB device controller on a virtio device: the virtio side
 *
 * The device (for example QEMU's vhost-user-udc-pci with the
 * vhost-device-udc back end) plays the USB host and the controller's DMA
 * engine. This driver registers a UDC with the gadget core: gadget drivers
 * queue usb_requests, the driver passes them to the device as lists of DMA
 * addresses on the xferq, and the device moves the data between the host
 * and exactly those addresses. Bus events arrive on the eventq; endpoint
 * and bus commands go on the controlq.
 *
 * This file drives the virtio device: the xferq, the commands on the
 * controlq, the events on the eventq, recovery from a lost back end, probe,
 * remove and system sleep. vudc_udc.c is the UDC the gadget core sees: its
 * endpoint and gadget operations.
 *
 * The wire format is docs/virtio-udc.md in the virtio-udc project.
 *
 * Locking: one spinlock, vudc->lock, covers the driver state and all three
 * virtqueues. It is dropped around every call into the gadget driver
 * (completions, setup, reset, disconnect, suspend, resume), as those may
 * queue or dequeue requests.
 *
 * Commands are synchronous, and the device answers them without waiting
 * for the host. How the driver waits depends on its caller:
 *
 * - Callers that may sleep wait on a completion that the controlq's
 *   interrupt signals (vudc_cmd_sleep()): the pullup operation, which the
 *   UDC core calls with its connect_lock mutex held, and the driver's own
 *   recovery and PM paths. They are serialised by vudc->cmd_mutex.
 * - The endpoint operations, get_frame, wakeup and set_selfpowered may be
 *   called in atomic context (the gadget API says so; usb_ep_enable runs
 *   from a set_alt handler inside our eventq interrupt, usb_ep_dequeue under
 *   f_fs's spinlock, set_selfpowered under composite's), and so does the
 *   stall of a refused SETUP. Those commands are sent with vudc->lock held
 *   and polled for (vudc_cmd_atomic()), as virtio-net polls its control
 *   queue. The poll is bounded: a device that does not answer within
 *   VUDC_CMD_TIMEOUT_MS is treated as gone.
 *
 * Each path has its own command buffer, so a sleeping command may be in
 * flight while an atomic one is sent; whichever path finds a response on
 * the controlq first marks its command finished. The recovery work has a
 * third buffer for its unbounded wait for a back end, so that a pullup
 * during that wait fails at once instead of queueing behind it.
 *
 * A device that loses its back end (the vhost-user daemon exits) sets
 * VIRTIO_CONFIG_S_NEEDS_RESET: the driver fails every request, tells the
 * gadget driver the bus is gone, resets the device and waits, sleeping,
 * until a back end answers again; then it reconnects if the gadget wanted.
 * System sleep goes through the same steps, without the wait: see
 * vudc_quiesce().
 */

#include <linux/completion.h>
#include <linux/device.h>
#include <linux/dma-mapping.h>
#include <linux/kernel.h>
#include <linux/ktime.h>
#include <linux/list.h>
#include <linux/module.h>
#include <linux/mutex.h>
#include <linux/scatterlist.h>
#include <linux/slab.h>
#include <linux/spinlock.h>
#include <linux/usb/ch9.h>
#include <linux/usb/gadget.h>
#include <linux/virtio.h>
#include <linux/virtio_config.h>
#include <linux/virtio_ids.h>
#include <linux/virtio_udc.h>
#include <linux/workqueue.h>

#include "vudc.h"

#define CREATE_TRACE_POINTS
#include "vudc_trace.h"

#define DRIVER_DESC	"virtio USB device controller"

/* Section 8 of the specification: device status to errno. */
static int vudc_status_to_errno(u32 status)
{
	switch (status) {
	case VIRTIO_UDC_S_OK:
		return 0;
	case VIRTIO_UDC_S_SHUTDOWN:
		return -ESHUTDOWN;
	case VIRTIO_UDC_S_CANCELLED:
		return -ECONNRESET;
	case VIRTIO_UDC_S_STALL:
		return -EPIPE;
	case VIRTIO_UDC_S_OVERFLOW:
		return -EOVERFLOW;
	case VIRTIO_UDC_S_PROTO:
		return -EPROTO;
	case VIRTIO_UDC_S_DMA_FAULT:
		return -EIO;
	case VIRTIO_UDC_S_INVALID:
		return -EINVAL;
	case VIRTIO_UDC_S_UNSUPPORTED:
		return -EOPNOTSUPP;
	case VIRTIO_UDC_S_BUSY:
		return -EAGAIN;
	case VIRTIO_UDC_S_NOT_FOUND:
		return -EINVAL;
	default:
		return -EIO;
	}
}

void vudc_drain_xferq(struct virtio_udc *vudc)
	__must_hold(&vudc->lock)
{
	struct virtio_udc_req *vreq;
	unsigned int len;
	int status;
	u32 actual;

	do {
		virtqueue_disable_cb(vudc->xvq);
		while ((vreq = virtqueue_get_buf(vudc->xvq, &len))) {
			if (len < sizeof(vreq->status)) {
				dev_warn_ratelimited(&vudc->vdev->dev,
						     "transfer %llu came back without a status\n",
						     vreq->tag);
				status = -EIO;
				actual = 0;
			} else {
				status = vudc_status_to_errno(le32_to_cpu(vreq->status.status));
				actual = le32_to_cpu(vreq->status.actual);
			}
			vreq->req.actual = min(actual, vreq->req.length);
			vudc_giveback(vudc, vreq, status);
		}
	} while (!virtqueue_enable_cb(vudc->xvq));
}

/*
 * Hand one request to the device. Under the lock, also from the xferq
 * interrupt (the backlog), so the ring's indirect descriptors are
 * allocated GFP_ATOMIC; everything else was allocated at queue time.
 */
int vudc_submit(struct virtio_udc *vudc, struct virtio_udc_req *vreq)
	__must_hold(&vudc->lock)
{
	struct scatterlist *sgs[2], status_sg, out_inline;
	unsigned int num_segs = le32_to_cpu(vreq->wire.hdr.num_segs);
	int ret;

	if (!vreq->nr_seg_pages)
		sg_init_one(&out_inline, &vreq->wire,
			    sizeof(vreq->wire.hdr) + num_segs * sizeof(struct virtio_udc_seg));
	sg_init_one(&status_sg, &vreq->status, sizeof(vreq->status));
	sgs[0] = vreq->nr_seg_pages ? vreq->out_sgs : &out_inline;
	sgs[1] = &status_sg;

	ret = virtqueue_add_sgs(vudc->xvq, sgs, 1, 1, vreq, GFP_ATOMIC);
	if (ret)
		return ret;
	vreq->in_flight = true;
	return 0;
}

/* Move requests from the backlog to the device while there is room. */
static void vudc_submit_backlog(struct virtio_udc *vudc)
	__must_hold(&vudc->lock)
{
	struct virtio_udc_req *vreq;
	bool kick = false;
	int ret;

	while ((vreq = list_first_entry_or_null(&vudc->backlog, struct virtio_udc_req, backlog))) {
		ret = vudc_submit(vudc, vreq);
		if (ret == -ENOSPC)
			break;
		list_del_init(&vreq->backlog);
		if (ret) {
			vudc_giveback(vudc, vreq, ret);
			continue;
		}
		kick = true;
	}
	if (kick)
		virtqueue_kick(vudc->xvq);
}

static void vudc_xferq_done(struct virtqueue *vq)
{
	struct virtio_udc *vudc = vq->vdev->priv;
	unsigned long flags;

	spin_lock_irqsave(&vudc->lock, flags);
	vudc_drain_xferq(vudc);
	vudc_submit_backlog(vudc);
	spin_unlock_irqrestore(&vudc->lock, flags);
}

/*
 * The device stopped answering. Take back every request: the device may
 * never complete them, and the gadget driver must not wait for it.
 */
static void vudc_mark_dead(struct virtio_udc *vudc)
	__must_hold(&vudc->lock)
{
	unsigned int i;

	if (vudc->dead)
		return;
	/*
	 * No virtio_break_device() here: it takes the virtio device's
	 * vqs_list_lock, which is not irq-safe, under our irq-safe lock.
	 * Nothing touches the queues of a dead device, and the reset work
	 * resets them before use.
	 */
	vudc->dead = true;
	vudc->epoch++;
	/* A sleeping command will get no response: wake it. */
	complete(&vudc->cmds[VUDC_CMD_SLEEP].done);
	for (i = 0; i < vudc->num_eps; i++)
		vudc_nuke_waiting(vudc, &vudc->eps[i], -ESHUTDOWN);
}

/* Collect the responses the device has put on the controlq. */
static void vudc_collect_cmds(struct virtio_udc *vudc)
	__must_hold(&vudc->lock)
{
	struct virtio_udc_cmd *cmd;
	unsigned int len;

	while ((cmd = virtqueue_get_buf(vudc->cvq, &len))) {
		cmd->len = len;
		cmd->finished = true;
		complete(&cmd->done);
	}
}

static void vudc_controlq_done(struct virtqueue *vq)
{
	struct virtio_udc *vudc = vq->vdev->priv;
	unsigned long flags;

	spin_lock_irqsave(&vudc->lock, flags);
	vudc_collect_cmds(vudc);
	spin_unlock_irqrestore(&vudc->lock, flags);
}

/* Put @req on the controlq in @cmd and notify the device. */
static int vudc_cmd_start(struct virtio_udc *vudc, struct virtio_udc_cmd *cmd,
			  const struct virtio_udc_ctrl_req *req)
	__must_hold(&vudc->lock)
{
	struct scatterlist out, in, *sgs[2] = { &out, &in };
	int ret;

	cmd->req = *req;
	memset(&cmd->resp, 0, sizeof(cmd->resp));
	cmd->len = 0;
	cmd->finished = false;
	reinit_completion(&cmd->done);
	sg_init_one(&out, &cmd->req, sizeof(cmd->req));
	sg_init_one(&in, &cmd->resp, sizeof(cmd->resp));
	ret = virtqueue_add_sgs(vudc->cvq, sgs, 1, 1, cmd, GFP_ATOMIC);
	if (ret)
		return ret;
	if (unlikely(!virtqueue_kick(vudc->cvq)))
		return -ENODEV;
	return 0;
}

/* The device did not answer: it is gone. */
static int vudc_cmd_gone(struct virtio_udc *vudc, const struct virtio_udc_ctrl_req *req)
	__must_hold(&vudc->lock)
{
	dev_err(&vudc->vdev->dev, "command %u: no response; failing all requests\n",
		le16_to_cpu(req->opcode));
	vudc_mark_dead(vudc);
	return -ESHUTDOWN;
}

/* The errno for a finished command's status; *value gets its value. */
static int vudc_cmd_result(struct virtio_udc *vudc, struct virtio_udc_cmd *cmd, u32 *value)
{
	if (cmd->len < sizeof(cmd->resp)) {
		dev_warn_ratelimited(&vudc->vdev->dev, "command %u: short response\n",
				     le16_to_cpu(cmd->req.opcode));
		return -EIO;
	}
	if (value)
		*value = le32_to_cpu(cmd->resp.value);
	return vudc_status_to_errno(le32_to_cpu(cmd->resp.status));
}

/*
 * Send one command from a caller that may be in atomic context, and poll
 * for its response with the lock held, for at most VUDC_CMD_TIMEOUT_MS.
 * Returns the errno for the device's status; *value receives the
 * response's value when not NULL.
 */
int vudc_cmd_atomic(struct virtio_udc *vudc, const struct virtio_udc_ctrl_req *req,
		    u32 *value)
	__must_hold(&vudc->lock)
{
	struct virtio_udc_cmd *cmd = &vudc->cmds[VUDC_CMD_ATOMIC];
	ktime_t deadline;
	int ret;

	if (vudc->dead || vudc->recovering)
		return -ESHUTDOWN;

	ret = vudc_cmd_start(vudc, cmd, req);
	if (ret == -ENODEV)
		return vudc_cmd_gone(vudc, req);
	if (ret)
		return ret;

	deadline = ktime_add_ms(ktime_get(), VUDC_CMD_TIMEOUT_MS);
	for (;;) {
		vudc_collect_cmds(vudc);
		if (cmd->finished)
			break;
		if (virtqueue_is_broken(vudc->cvq) || ktime_after(ktime_get(), deadline))
			return vudc_cmd_gone(vudc, req);
		cpu_relax();
	}
	return vudc_cmd_result(vudc, cmd, value);
}

int vudc_simple_cmd(struct virtio_udc *vudc, u16 opcode, u8 ep, u32 value, u32 *result)
	__must_hold(&vudc->lock)
{
	struct virtio_udc_ctrl_req req = {
		.opcode = cpu_to_le16(opcode),
		.ep = ep,
		.value = cpu_to_le32(value),
	};

	return vudc_cmd_atomic(vudc, &req, result);
}

/*
 * Send one command from a caller that may sleep, without the lock, and
 * sleep until the controlq interrupt reports its response, for at most
 * VUDC_CMD_TIMEOUT_MS. Returns as vudc_cmd_atomic() does.
 */
int vudc_cmd_sleep(struct virtio_udc *vudc, u16 opcode, u32 value, u32 *result)
{
	struct virtio_udc_cmd *cmd = &vudc->cmds[VUDC_CMD_SLEEP];
	struct virtio_udc_ctrl_req req = {
		.opcode = cpu_to_le16(opcode),
		.value = cpu_to_le32(value),
	};
	unsigned long flags;
	unsigned int epoch;
	int ret;

	mutex_lock(&vudc->cmd_mutex);
	spin_lock_irqsave(&vudc->lock, flags);
	if (vudc->dead || vudc->recovering) {
		ret = -ESHUTDOWN;
		goto unlock;
	}
	epoch = vudc->epoch;
	ret = vudc_cmd_start(vudc, cmd, &req);
	if (ret == -ENODEV)
		ret = vudc_cmd_gone(vudc, &req);
	if (ret)
		goto unlock;
	spin_unlock_irqrestore(&vudc->lock, flags);

	wait_for_completion_timeout(&cmd->done, msecs_to_jiffies(VUDC_CMD_TIMEOUT_MS));

	spin_lock_irqsave(&vudc->lock, flags);
	if (vudc->epoch != epoch) {
		/* Given up for dead meanwhile, perhaps reset already. */
		ret = -ESHUTDOWN;
		goto unlock;
	}
	vudc_collect_cmds(vudc);
	if (cmd->finished)
		ret = vudc_cmd_result(vudc, cmd, result);
	else
		ret = vudc_cmd_gone(vudc, &req);
unlock:
	spin_unlock_irqrestore(&vudc->lock, flags);
	mutex_unlock(&vudc->cmd_mutex);
	return ret;
}

/* --------------------------------------------------------------------- */
/* Events                                                                */

static enum usb_device_speed vudc_speed(u32 value)
{
	switch (value) {
	case VIRTIO_UDC_SPEED_LOW:
		return USB_SPEED_LOW;
	case VIRTIO_UDC_SPEED_FULL:
		return USB_SPEED_FULL;
	case VIRTIO_UDC_SPEED_HIGH:
		return USB_SPEED_HIGH;
	case VIRTIO_UDC_SPEED_SUPER:
		return USB_SPEED_SUPER;
	case VIRTIO_UDC_SPEED_SUPER_PLUS:
		return USB_SPEED_SUPER_PLUS;
	default:
		return USB_SPEED_UNKNOWN;
	}
}

static void vudc_event_bus_reset(struct virtio_udc *vudc, u32 value)
	__must_hold(&vudc->lock)
{
	struct usb_gadget_driver *driver = vudc->driver;
	enum usb_device_speed speed = vudc_speed(value);

	vudc_bus_gone(vudc);
	if (speed == USB_SPEED_UNKNOWN || speed > vudc->gadget.max_speed) {
		dev_warn(&vudc->vdev->dev, "bus reset at unknown speed %u\n", value);
		speed = vudc->gadget.max_speed;
	}
	/* The gadget driver's reset handler looks at the old speed. */
	if (driver && vudc->gadget.speed != USB_SPEED_UNKNOWN) {
		spin_unlock(&vudc->lock);
		usb_gadget_udc_reset(&vudc->gadget, driver);
		spin_lock(&vudc->lock);
	}
	vudc->gadget.speed = speed;
	vudc->eps[0].ep.maxpacket = speed >= USB_SPEED_SUPER ? 512 : 64;
	usb_gadget_set_state(&vudc->gadget, USB_STATE_DEFAULT);
}

static void vudc_event_setup(struct virtio_udc *vudc, const u8 *raw)
	__must_hold(&vudc->lock)
{
	struct usb_gadget_driver *driver = vudc->driver;
	struct usb_ctrlrequest ctrl;
	int ret = -EOPNOTSUPP;

	memcpy(&ctrl, raw, sizeof(ctrl));
	/* An earlier control transfer's ep0 requests came back CANCELLED. */
	vudc_drain_xferq(vudc);
	vudc->ep0_in = (ctrl.bRequestType & USB_DIR_IN) && le16_to_cpu(ctrl.wLength);

	if (driver) {
		spin_unlock(&vudc->lock);
		ret = driver->setup(&vudc->gadget, &ctrl);
		spin_lock(&vudc->lock);
	}
	if (ret < 0) {
		dev_dbg(&vudc->vdev->dev, "setup %02x.%02x: stall (%d)\n",
			ctrl.bRequestType, ctrl.bRequest, ret);
		vudc_simple_cmd(vudc, VIRTIO_UDC_CMD_EP_SET_HALT, 0, 1, NULL);
	}
}

static void vudc_event_disconnect(struct virtio_udc *vudc)
	__must_hold(&vudc->lock)
{
	struct usb_gadget_driver *driver = vudc->driver;
	bool was_connected = vudc->gadget.speed != USB_SPEED_UNKNOWN;

	vudc_bus_gone(vudc);
	vudc->gadget.speed = USB_SPEED_UNKNOWN;
	if (driver && was_connected && driver->disconnect) {
		spin_unlock(&vudc->lock);
		driver->disconnect(&vudc->gadget);
		spin_lock(&vudc->lock);
	}
	usb_gadget_set_state(&vudc->gadget, USB_STATE_NOTATTACHED);
}

static void vudc_event_suspend(struct virtio_udc *vudc, bool suspend)
	__must_hold(&vudc->lock)
{
	struct usb_gadget_driver *driver = vudc->driver;

	if (!driver)
		return;
	spin_unlock(&vudc->lock);
	if (suspend && driver->suspend)
		driver->suspend(&vudc->gadget);
	else if (!suspend && driver->resume)
		driver->resume(&vudc->gadget);
	spin_lock(&vudc->lock);
}

static struct virtio_udc_ep *vudc_find_ep(struct virtio_udc *vudc, u8 addr)
{
	unsigned int i;

	for (i = 1; i < vudc->num_eps; i++)
		if (vudc->eps[i].addr == addr)
			return &vudc->eps[i];
	return NULL;
}

static void vudc_handle_event(struct virtio_udc *vudc, const struct virtio_udc_event *evt)
	__must_hold(&vudc->lock)
{
	struct virtio_udc_ep *vep;
	u32 value = le32_to_cpu(evt->value);

	trace_virtio_udc_event(evt);
	switch (le16_to_cpu(evt->type)) {
	case VIRTIO_UDC_EVT_BUS_RESET:
		vudc_event_bus_reset(vudc, value);
		break;
	case VIRTIO_UDC_EVT_SETUP:
		vudc_event_setup(vudc, evt->setup);
		break;
	case VIRTIO_UDC_EVT_SUSPEND:
		usb_gadget_set_state(&vudc->gadget, USB_STATE_SUSPENDED);
		vudc_event_suspend(vudc, true);
		break;
	case VIRTIO_UDC_EVT_RESUME:
		vudc_event_suspend(vudc, false);
		break;
	case VIRTIO_UDC_EVT_DISCONNECT:
		vudc_event_disconnect(vudc);
		break;
	case VIRTIO_UDC_EVT_ADDRESS:
		usb_gadget_set_state(&vudc->gadget, value ? USB_STATE_ADDRESS : USB_STATE_DEFAULT);
		break;
	case VIRTIO_UDC_EVT_EP_HALT:
		vep = vudc_find_ep(vudc, evt->ep);
		if (vep) {
			vep->halted = !!value;
			if (!value)
				vep->wedged = false;
		}
		break;
	default:
		dev_warn_ratelimited(&vudc->vdev->dev, "unknown event %u\n",
				     le16_to_cpu(evt->type));
		break;
	}
}

static int vudc_post_event_buf(struct virtio_udc *vudc, struct virtio_udc_event *buf)
{
	struct scatterlist sg;

	sg_init_one(&sg, buf, sizeof(*buf));
	return virtqueue_add_inbuf(vudc->evq, &sg, 1, buf, GFP_ATOMIC);
}

static void vudc_eventq_done(struct virtqueue *vq)
{
	struct virtio_udc *vudc = vq->vdev->priv;
	struct virtio_udc_event *buf, evt;
	unsigned long flags;
	unsigned int len;

	spin_lock_irqsave(&vudc->lock, flags);
	do {
		virtqueue_disable_cb(vq);
		while (!vudc->dead && (buf = virtqueue_get_buf(vq, &len))) {
			evt = *buf;
			/* Give the buffer back first: the handler may take long. */
			if (vudc_post_event_buf(vudc, buf))
				dev_warn(&vudc->vdev->dev, "cannot repost an event buffer\n");
			virtqueue_kick(vq);
			if (len < sizeof(evt)) {
				dev_warn_ratelimited(&vudc->vdev->dev,
						     "short event (%u bytes)\n", len);
				continue;
			}
			vudc_handle_event(vudc, &evt);
		}
	} while (!vudc->dead && !virtqueue_enable_cb(vq));
	spin_unlock_irqrestore(&vudc->lock, flags);
}

/* --------------------------------------------------------------------- */
/* Probe and remove                                                      */

static int vudc_find_vqs(struct virtio_udc *vudc);
static int vudc_post_event_bufs(struct virtio_udc *vudc);

/*
 * Wait, sleeping, until the device answers a command: after a reset that
 * followed the loss of the back end, that is when a new one serves it.
 * The wait has no bound (a back end may take long to come back); it ends
 * early when the driver is unbinding.
 */
static bool vudc_wait_for_backend(struct virtio_udc *vudc)
{
	struct virtio_udc_cmd *cmd = &vudc->cmds[VUDC_CMD_PROBE];
	struct virtio_udc_ctrl_req req = {
		.opcode = cpu_to_le16(VIRTIO_UDC_CMD_GET_FRAME),
	};
	unsigned long flags;
	bool answered = false;
	int ret;

	spin_lock_irqsave(&vudc->lock, flags);
	ret = vudc_cmd_start(vudc, cmd, &req);
	spin_unlock_irqrestore(&vudc->lock, flags);

	while (!ret && !answered) {
		wait_for_completion_timeout(&cmd->done, msecs_to_jiffies(VUDC_RECOVERY_POLL_MS));
		spin_lock_irqsave(&vudc->lock, flags);
		if (vudc->stopping || virtqueue_is_broken(vudc->cvq)) {
			spin_unlock_irqrestore(&vudc->lock, flags);
			break;
		}
		vudc_collect_cmds(vudc);
		answered = cmd->finished;
		spin_unlock_irqrestore(&vudc->lock, flags);
	}
	return answered;
}

/*
 * Recovery from a lost back end and system sleep share two halves, shaped
 * like the virtio core's reset_prepare and reset_done driver callbacks:
 * vudc_quiesce() takes every request back, tells the gadget driver the bus
 * is gone, resets the device and deletes the queues; vudc_restart(), once
 * the features are negotiated again, sets the queues up, posts the event
 * buffers and sets DRIVER_OK. vudc_reconnect() then pulls up again if the
 * gadget wanted to be connected.
 *
 * For system sleep, the virtio core's virtio_device_freeze() and
 * virtio_device_restore() call them through .freeze and .restore and do
 * the reset and the status and feature negotiation in between. A lost
 * back end is noticed by the driver, which has to start the reset itself,
 * and Linux 6.12 has no core path a driver can call for that: struct
 * virtio_driver has no reset_prepare/reset_done (they came in 6.14, with
 * virtio_device_reset_prepare() and virtio_device_reset_done(), for
 * virtio-pci's function level reset), and virtio_device_restore() exists
 * only with CONFIG_PM_SLEEP. So the recovery work does that step itself,
 * in vudc_renegotiate(), as virtio_device_restore() does it. With 6.14 as
 * the oldest kernel, the two halves become .reset_prepare and .reset_done
 * and the recovery work calls the core's two functions instead.
 */
static void vudc_quiesce(struct virtio_udc *vudc)
{
	struct virtio_device *vdev = vudc->vdev;
	struct usb_gadget_driver *driver;
	unsigned long flags;
	bool was_connected;

	spin_lock_irqsave(&vudc->lock, flags);
	vudc_mark_dead(vudc);
	vudc->recovering = true;
	was_connected = vudc->gadget.speed != USB_SPEED_UNKNOWN;
	vudc->gadget.speed = USB_SPEED_UNKNOWN;
	driver = vudc->driver;
	if (driver && was_connected && driver->disconnect) {
		spin_unlock(&vudc->lock);
		driver->disconnect(&vudc->gadget);
		spin_lock(&vudc->lock);
	}
	spin_unlock_irqrestore(&vudc->lock, flags);
	usb_gadget_set_state(&vudc->gadget, USB_STATE_NOTATTACHED);

	virtio_reset_device(vdev);
	if (vudc->cvq) {
		vdev->config->del_vqs(vdev);
		spin_lock_irqsave(&vudc->lock, flags);
		vudc->cvq = NULL;
		vudc->evq = NULL;
		vudc->xvq = NULL;
		spin_unlock_irqrestore(&vudc->lock, flags);
	}
}

/* What virtio_device_restore() does between the halves: see above. */
static int vudc_renegotiate(struct virtio_device *vdev)
{
	int ret;

	virtio_add_status(vdev, VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER);
	ret = vdev->config->finalize_features(vdev);
	if (ret)
		return ret;
	virtio_add_status(vdev, VIRTIO_CONFIG_S_FEATURES_OK);
	if (!(vdev->config->get_status(vdev) & VIRTIO_CONFIG_S_FEATURES_OK))
		return -ENODEV;
	return 0;
}

static int vudc_restart(struct virtio_udc *vudc)
{
	struct virtio_device *vdev = vudc->vdev;
	unsigned long flags;
	int ret;

	ret = vudc_find_vqs(vudc);
	if (ret) {
		dev_err(&vdev->dev, "cannot set the queues up again: %d\n", ret);
		return ret;
	}
	ret = vudc_post_event_bufs(vudc);
	if (ret) {
		dev_err(&vdev->dev, "cannot post event buffers: %d\n", ret);
		return ret;
	}
	spin_lock_irqsave(&vudc->lock, flags);
	vudc->dead = false;
	spin_unlock_irqrestore(&vudc->lock, flags);
	virtio_device_ready(vdev);
	virtqueue_kick(vudc->evq);
	return 0;
}

static void vudc_reconnect(struct virtio_udc *vudc)
{
	unsigned long flags;
	bool reconnect;
	int ret;

	spin_lock_irqsave(&vudc->lock, flags);
	vudc->recovering = false;
	reconnect = vudc->pullup && vudc->driver;
	spin_unlock_irqrestore(&vudc->lock, flags);
	if (reconnect) {
		ret = vudc_cmd_sleep(vudc, VIRTIO_UDC_CMD_PULLUP, 1, NULL);
		if (ret)
			dev_warn(&vudc->vdev->dev, "cannot connect again: %d\n", ret);
	}
}

static void vudc_reset_work(struct work_struct *work)
{
	struct virtio_udc *vudc = container_of(work, struct virtio_udc, reset_work);
	struct virtio_device *vdev = vudc->vdev;
	unsigned long flags;
	bool busy;
	int ret;

	if (!(vdev->config->get_status(vdev) & VIRTIO_CONFIG_S_NEEDS_RESET))
		return;

	spin_lock_irqsave(&vudc->lock, flags);
	busy = vudc->stopping || vudc->recovering;
	spin_unlock_irqrestore(&vudc->lock, flags);
	if (busy)
		return;

	dev_warn(&vdev->dev, "device needs a reset (its back end went away); failing all requests\n");
	vudc_quiesce(vudc);
	ret = vudc_renegotiate(vdev);
	if (ret) {
		dev_err(&vdev->dev, "the device refused its features again: %d\n", ret);
		return;
	}
	if (vudc_restart(vudc))
		return;
	if (!vudc_wait_for_backend(vudc))
		return;
	dev_info(&vdev->dev, "device reset; a back end serves it again\n");
	vudc_reconnect(vudc);
}

static void virtio_udc_config_changed(struct virtio_device *vdev)
{
	struct virtio_udc *vudc = vdev->priv;

	if (vdev->config->get_status(vdev) & VIRTIO_CONFIG_S_NEEDS_RESET)
		schedule_work(&vudc->reset_work);
}

static int vudc_find_vqs(struct virtio_udc *vudc)
{
	struct virtqueue *vqs[VIRTIO_UDC_NUM_VQS];
	struct virtqueue_info vqs_info[VIRTIO_UDC_NUM_VQS] = {
		[VIRTIO_UDC_VQ_CONTROL] = { .name = "control", .callback = vudc_controlq_done },
		[VIRTIO_UDC_VQ_EVENT] = { .name = "event", .callback = vudc_eventq_done },
		[VIRTIO_UDC_VQ_XFER] = { .name = "xfer", .callback = vudc_xferq_done },
	};
	int ret;

	ret = virtio_find_vqs(vudc->vdev, VIRTIO_UDC_NUM_VQS, vqs, vqs_info, NULL);
	if (ret)
		return ret;
	vudc->cvq = vqs[VIRTIO_UDC_VQ_CONTROL];
	vudc->evq = vqs[VIRTIO_UDC_VQ_EVENT];
	vudc->xvq = vqs[VIRTIO_UDC_VQ_XFER];
	return 0;
}

static int vudc_post_event_bufs(struct virtio_udc *vudc)
{
	unsigned int i;
	int ret;

	for (i = 0; i < VUDC_EVENT_BUFS; i++) {
		ret = vudc_post_event_buf(vudc, &vudc->events[i]);
		if (ret)
			return ret;
	}
	return 0;
}

/* Build ep0 and the endpoints from the configuration space. */

static void virtio_udc_gadget_release(struct device *dev)
{
	struct usb_gadget *gadget = container_of(dev, struct usb_gadget, dev);
	struct virtio_udc *vudc = gadget_to_vudc(gadget);

	kfree(vudc->events);
	kfree(vudc->cmds);
	kfree(vudc);
}

static int virtio_udc_probe(struct virtio_device *vdev)
{
	struct virtio_udc *vudc;
	struct usb_gadget *gadget;
	unsigned int i;
	u8 max_speed;
	int ret;

	if (!virtio_has_feature(vdev, VIRTIO_F_VERSION_1))
		return -ENODEV;
	if (!vdev->dev.parent) {
		dev_err(&vdev->dev, "no transport device to DMA through\n");
		return -ENODEV;
	}

	vudc = kzalloc(sizeof(*vudc), GFP_KERNEL);
	if (!vudc)
		return -ENOMEM;
	vudc->cmds = kcalloc(VUDC_NUM_CMDS, sizeof(*vudc->cmds), GFP_KERNEL);
	vudc->events = kcalloc(VUDC_EVENT_BUFS, sizeof(*vudc->events), GFP_KERNEL);
	if (!vudc->cmds || !vudc->events) {
		ret = -ENOMEM;
		goto err_free;
	}
	for (i = 0; i < VUDC_NUM_CMDS; i++)
		init_completion(&vudc->cmds[i].done);

	spin_lock_init(&vudc->lock);
	mutex_init(&vudc->cmd_mutex);
	INIT_LIST_HEAD(&vudc->backlog);
	INIT_WORK(&vudc->reset_work, vudc_reset_work);
	vudc->vdev = vdev;
	/* f_fs attaches DMABUFs to gadget->dev.parent: the device that DMAs. */
	vudc->dma_dev = vdev->dev.parent;
	/*
	 * A segment may be as long as its 32-bit length field and lie
	 * anywhere. Say so, or the DMA API keeps the PCI defaults (64 KiB
	 * segments within 4 GiB) and DMA_API_DEBUG reports every longer
	 * segment the gadget stack hands over.
	 */
	dma_set_max_seg_size(vudc->dma_dev, UINT_MAX);
	dma_set_seg_boundary(vudc->dma_dev, ULONG_MAX);
	vdev->priv = vudc;

	vudc->flags = virtio_cread32(vdev, offsetof(struct virtio_udc_config, flags));
	vudc->max_segments = virtio_cread32(vdev, offsetof(struct virtio_udc_config, max_segments));
	max_speed = virtio_cread8(vdev, offsetof(struct virtio_udc_config, max_speed));
	if (!vudc->max_segments) {
		dev_err(&vdev->dev, "device allows no segments\n");
		ret = -EINVAL;
		goto err_free;
	}

	gadget = &vudc->gadget;
	gadget->ops = &virtio_udc_gadget_ops;
	gadget->name = "virtio_udc";
	gadget->speed = USB_SPEED_UNKNOWN;
	gadget->max_speed = vudc_speed(max_speed);
	if (gadget->max_speed == USB_SPEED_UNKNOWN || gadget->max_speed == USB_SPEED_LOW) {
		dev_err(&vdev->dev, "unsupported maximum speed %u\n", max_speed);
		ret = -EINVAL;
		goto err_free;
	}
	gadget->sg_supported = !!(vudc->flags & VIRTIO_UDC_CONFIG_F_SG) && vudc->max_segments > 1;

	ret = vudc_init_eps(vudc);
	if (ret)
		goto err_free;

	ret = vudc_find_vqs(vudc);
	if (ret)
		goto err_free;

	ret = vudc_post_event_bufs(vudc);
	if (ret)
		goto err_vqs;

	virtio_device_ready(vdev);
	virtqueue_kick(vudc->evq);

	usb_initialize_gadget(vudc->dma_dev, gadget, virtio_udc_gadget_release);
	ret = usb_add_gadget(gadget);
	if (ret) {
		virtio_reset_device(vdev);
		vdev->config->del_vqs(vdev);
		usb_put_gadget(gadget);
		return ret;
	}

	dev_info(&vdev->dev, "UDC %s: %u endpoints, %s, %s\n", dev_name(vudc->dma_dev),
		 vudc->num_eps, usb_speed_string(gadget->max_speed),
		 gadget->sg_supported ? "scatter-gather" : "no scatter-gather");
	return 0;

err_vqs:
	virtio_reset_device(vdev);
	vdev->config->del_vqs(vdev);
err_free:
	kfree(vudc->events);
	kfree(vudc->cmds);
	kfree(vudc);
	return ret;
}

static void virtio_udc_remove(struct virtio_device *vdev)
{
	struct virtio_udc *vudc = vdev->priv;
	struct virtio_udc_req *vreq;
	unsigned long flags;
	unsigned int i;

	spin_lock_irqsave(&vudc->lock, flags);
	vudc->stopping = true;
	spin_unlock_irqrestore(&vudc->lock, flags);
	cancel_work_sync(&vudc->reset_work);

	/* Unbinds the gadget driver: it disables its endpoints and stops. */
	usb_del_gadget(&vudc->gadget);

	virtio_reset_device(vdev);

	/* The device forgot everything; take back what the gadget left. */
	spin_lock_irqsave(&vudc->lock, flags);
	vudc->dead = true;
	for (i = 0; i < vudc->num_eps; i++)
		vudc_nuke_waiting(vudc, &vudc->eps[i], -ESHUTDOWN);
	while (vudc->xvq && (vreq = virtqueue_detach_unused_buf(vudc->xvq)))
		;
	spin_unlock_irqrestore(&vudc->lock, flags);

	/* A recovery that gave up may have left no queues. */
	if (vudc->cvq)
		vdev->config->del_vqs(vdev);
	usb_put_gadget(&vudc->gadget);
}

/*
 * System sleep: the device loses its state, so the gadget is disconnected
 * and every request fails, as when the back end goes away; after resume
 * the gadget connects again if it wanted to be connected, and the host
 * enumerates it again.
 */
static int virtio_udc_freeze(struct virtio_device *vdev)
{
	struct virtio_udc *vudc = vdev->priv;
	unsigned long flags;

	spin_lock_irqsave(&vudc->lock, flags);
	vudc->stopping = true;
	spin_unlock_irqrestore(&vudc->lock, flags);
	cancel_work_sync(&vudc->reset_work);
	vudc_quiesce(vudc);
	return 0;
}

static int virtio_udc_restore(struct virtio_device *vdev)
{
	struct virtio_udc *vudc = vdev->priv;
	unsigned long flags;
	int ret;

	ret = vudc_restart(vudc);
	if (ret)
		return ret;
	spin_lock_irqsave(&vudc->lock, flags);
	vudc->stopping = false;
	spin_unlock_irqrestore(&vudc->lock, flags);
	vudc_reconnect(vudc);
	return 0;
}

static const struct virtio_device_id id_table[] = {
	{ VIRTIO_ID_UDC, VIRTIO_DEV_ANY_ID },
	{ 0 },
};
MODULE_DEVICE_TABLE(virtio, id_table);

static unsigned int features[] = {
};

static struct virtio_driver virtio_udc_driver = {
	.feature_table		= features,
	.feature_table_size	= ARRAY_SIZE(features),
	.driver.name		= KBUILD_MODNAME,
	.id_table		= id_table,
	.probe			= virtio_udc_probe,
	.remove			= virtio_udc_remove,
	.config_changed		= virtio_udc_config_changed,
	.freeze			= pm_sleep_ptr(virtio_udc_freeze),
	.restore		= pm_sleep_ptr(virtio_udc_restore),
};
module_virtio_driver(virtio_udc_driver);

MODULE_DESCRIPTION(DRIVER_DESC);
MODULE_AUTHOR("virtio-udc developers <virtio-udc@localhost>");
MODULE_LICENSE("GPL");
