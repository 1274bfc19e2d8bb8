/* SPDX-License-Identifier: GPL-2.0 */
/*
 * virtio_udc trace events: each request as the driver hands it to the
 * device, asks for it back and gives it back to its gadget driver, and the
 * bus events the device reports. The gadget core's own events
 * (gadget:usb_ep_queue, ...) show the same requests as the gadget driver
 * sees them; these add what only this driver knows: the tag the device
 * sees, the segments it was given and whether it owns the request.
 */

#undef TRACE_SYSTEM
#define TRACE_SYSTEM virtio_udc

#if !defined(_VUDC_TRACE_H) || defined(TRACE_HEADER_MULTI_READ)
#define _VUDC_TRACE_H

#include <linux/string.h>
#include <linux/tracepoint.h>
#include <linux/types.h>

#include "vudc.h"

DECLARE_EVENT_CLASS(virtio_udc_log_req,
		    TP_PROTO(struct virtio_udc_ep *vep, struct virtio_udc_req *vreq, int ret),
		    TP_ARGS(vep, vreq, ret),
		    TP_STRUCT__entry(__array(char, name, sizeof_field(struct virtio_udc_ep, name))
				     __field(struct usb_request *, req)
				     __field(u64, tag)
				     __field(unsigned int, length)
				     __field(unsigned int, actual)
				     __field(unsigned int, num_sgs)
				     __field(unsigned int, num_segs)
				     __field(int, status)
				     __field(int, ret)
				     __field(bool, zero)
				     __field(bool, in_flight)),
		    TP_fast_assign(memcpy(__entry->name, vep->name, sizeof(__entry->name));
				   __entry->req = &vreq->req;
				   __entry->tag = vreq->tag;
				   __entry->length = vreq->req.length;
				   __entry->actual = vreq->req.actual;
				   __entry->num_sgs = vreq->req.num_sgs;
				   __entry->num_segs = le32_to_cpu(vreq->wire.hdr.num_segs);
				   __entry->status = vreq->req.status;
				   __entry->ret = ret;
				   __entry->zero = vreq->req.zero;
				   __entry->in_flight = vreq->in_flight;),
		    TP_printk("%s: req %p tag %llu length %u/%u sgs %u segs %u %s%s status %d --> %d",
			      __entry->name, __entry->req, __entry->tag, __entry->actual,
			      __entry->length, __entry->num_sgs, __entry->num_segs,
			      __entry->in_flight ? "D" : "d", __entry->zero ? "Z" : "z",
			      __entry->status, __entry->ret)
);

/* A request queued: to the device (D) or to the backlog (d), or refused. */
DEFINE_EVENT(virtio_udc_log_req, virtio_udc_ep_queue,
	     TP_PROTO(struct virtio_udc_ep *vep, struct virtio_udc_req *vreq, int ret),
	     TP_ARGS(vep, vreq, ret)
);

/* A request dequeued: D means the device is asked to cancel it. */
DEFINE_EVENT(virtio_udc_log_req, virtio_udc_ep_dequeue,
	     TP_PROTO(struct virtio_udc_ep *vep, struct virtio_udc_req *vreq, int ret),
	     TP_ARGS(vep, vreq, ret)
);

/* A request given back to its gadget driver, with its final status. */
DEFINE_EVENT(virtio_udc_log_req, virtio_udc_giveback,
	     TP_PROTO(struct virtio_udc_ep *vep, struct virtio_udc_req *vreq, int ret),
	     TP_ARGS(vep, vreq, ret)
);

/* An event of the eventq, before the driver acts on it. */
TRACE_EVENT(virtio_udc_event,
	    TP_PROTO(const struct virtio_udc_event *evt),
	    TP_ARGS(evt),
	    TP_STRUCT__entry(__field(u16, type)
			     __field(u8, ep)
			     __field(u32, value)
			     __array(u8, setup, 8)),
	    TP_fast_assign(__entry->type = le16_to_cpu(evt->type);
			   __entry->ep = evt->ep;
			   __entry->value = le32_to_cpu(evt->value);
			   memcpy(__entry->setup, evt->setup, sizeof(__entry->setup));),
	    TP_printk("%s ep %02x value %u setup %8ph",
		      __print_symbolic(__entry->type,
				       { VIRTIO_UDC_EVT_BUS_RESET, "BUS_RESET" },
				       { VIRTIO_UDC_EVT_SETUP, "SETUP" },
				       { VIRTIO_UDC_EVT_SUSPEND, "SUSPEND" },
				       { VIRTIO_UDC_EVT_RESUME, "RESUME" },
				       { VIRTIO_UDC_EVT_DISCONNECT, "DISCONNECT" },
				       { VIRTIO_UDC_EVT_ADDRESS, "ADDRESS" },
				       { VIRTIO_UDC_EVT_EP_HALT, "EP_HALT" }),
		      __entry->ep, __entry->value, __entry->setup)
);

#endif /* _VUDC_TRACE_H */

/* This part must be outside the multi-read protection. */
#undef TRACE_INCLUDE_PATH
#define TRACE_INCLUDE_PATH .
#undef TRACE_INCLUDE_FILE
#define TRACE_INCLUDE_FILE vudc_trace

#include <trace/define_trace.h>
