import * as $protobuf from "protobufjs";
import Long = require("long");

/** Namespace tally. */
export namespace tally {

    /** Namespace v1. */
    namespace v1 {

        /**
         * Properties of an Event.
         * @deprecated Use tally.v1.Event.$Properties instead.
         */
        interface IEvent extends tally.v1.Event.$Properties {
        }

        /** Represents an Event. */
        class Event {

            /**
             * Constructs a new Event.
             * @param [properties] Properties to set
             */
            constructor(properties?: tally.v1.Event.$Properties);

            /** Unknown fields preserved while decoding when enabled */
            $unknowns?: Uint8Array[];

            /** Event id. */
            id: string;

            /** Event type. */
            type: string;

            /** Event customer. */
            customer: string;

            /** Event time. */
            time: string;

            /** Event timeMs. */
            timeMs: number;

            /** Event properties. */
            properties: { [k: string]: string };

            /** Event source. */
            source: string;

            /**
             * Creates a new Event instance using the specified properties.
             * @param [properties] Properties to set
             * @returns Event instance
             */
            static create(properties: tally.v1.Event.$Shape): tally.v1.Event & tally.v1.Event.$Shape;
            static create(properties?: tally.v1.Event.$Properties): tally.v1.Event;

            /**
             * Encodes the specified Event message. Does not implicitly {@link tally.v1.Event.verify|verify} messages.
             * @param message Event message or plain object to encode
             * @param [writer] Writer to encode to
             * @returns Writer
             */
            static encode(message: tally.v1.Event.$Properties, writer?: $protobuf.Writer): $protobuf.Writer;

            /**
             * Decodes an Event message from the specified reader or buffer.
             * @param reader Reader or buffer to decode from
             * @param [length] Message length if known beforehand
             * @returns {tally.v1.Event & tally.v1.Event.$Shape} Event
             * @throws {Error} If the payload is not a reader or valid buffer
             * @throws {$protobuf.util.ProtocolError} If required fields are missing
             */
            static decode(reader: ($protobuf.Reader|Uint8Array), length?: number): tally.v1.Event & tally.v1.Event.$Shape;

            /**
             * Gets the type url for Event
             * @param [prefix] Custom type url prefix, defaults to `"type.googleapis.com"`
             * @returns The type url
             */
            static getTypeUrl(prefix?: string): string;
        }

        namespace Event {

            /** Properties of an Event. */
            interface $Properties {

                /** Event id */
                id?: (string|null);

                /** Event type */
                type?: (string|null);

                /** Event customer */
                customer?: (string|null);

                /** Event time */
                time?: (string|null);

                /** Event timeMs */
                timeMs?: (number|null);

                /** Event properties */
                properties?: ({ [k: string]: string }|null);

                /** Event source */
                source?: (string|null);

                /** Unknown fields preserved while decoding when enabled */
                $unknowns?: Uint8Array[];
            }

            /** Shape of an Event. */
            type $Shape = tally.v1.Event.$Properties;
        }

        /**
         * Properties of an EventBatch.
         * @deprecated Use tally.v1.EventBatch.$Properties instead.
         */
        interface IEventBatch extends tally.v1.EventBatch.$Properties {
        }

        /** Represents an EventBatch. */
        class EventBatch {

            /**
             * Constructs a new EventBatch.
             * @param [properties] Properties to set
             */
            constructor(properties?: tally.v1.EventBatch.$Properties);

            /** Unknown fields preserved while decoding when enabled */
            $unknowns?: Uint8Array[];

            /** EventBatch events. */
            events: tally.v1.Event.$Properties[];

            /**
             * Creates a new EventBatch instance using the specified properties.
             * @param [properties] Properties to set
             * @returns EventBatch instance
             */
            static create(properties: tally.v1.EventBatch.$Shape): tally.v1.EventBatch & tally.v1.EventBatch.$Shape;
            static create(properties?: tally.v1.EventBatch.$Properties): tally.v1.EventBatch;

            /**
             * Encodes the specified EventBatch message. Does not implicitly {@link tally.v1.EventBatch.verify|verify} messages.
             * @param message EventBatch message or plain object to encode
             * @param [writer] Writer to encode to
             * @returns Writer
             */
            static encode(message: tally.v1.EventBatch.$Properties, writer?: $protobuf.Writer): $protobuf.Writer;

            /**
             * Decodes an EventBatch message from the specified reader or buffer.
             * @param reader Reader or buffer to decode from
             * @param [length] Message length if known beforehand
             * @returns {tally.v1.EventBatch & tally.v1.EventBatch.$Shape} EventBatch
             * @throws {Error} If the payload is not a reader or valid buffer
             * @throws {$protobuf.util.ProtocolError} If required fields are missing
             */
            static decode(reader: ($protobuf.Reader|Uint8Array), length?: number): tally.v1.EventBatch & tally.v1.EventBatch.$Shape;

            /**
             * Gets the type url for EventBatch
             * @param [prefix] Custom type url prefix, defaults to `"type.googleapis.com"`
             * @returns The type url
             */
            static getTypeUrl(prefix?: string): string;
        }

        namespace EventBatch {

            /** Properties of an EventBatch. */
            interface $Properties {

                /** EventBatch events */
                events?: (tally.v1.Event.$Properties[]|null);

                /** Unknown fields preserved while decoding when enabled */
                $unknowns?: Uint8Array[];
            }

            /** Shape of an EventBatch. */
            type $Shape = tally.v1.EventBatch.$Properties;
        }

        /**
         * Properties of a BusEvent.
         * @deprecated Use tally.v1.BusEvent.$Properties instead.
         */
        interface IBusEvent extends tally.v1.BusEvent.$Properties {
        }

        /** Represents a BusEvent. */
        class BusEvent {

            /**
             * Constructs a new BusEvent.
             * @param [properties] Properties to set
             */
            constructor(properties?: tally.v1.BusEvent.$Properties);

            /** Unknown fields preserved while decoding when enabled */
            $unknowns?: Uint8Array[];

            /** BusEvent id. */
            id: string;

            /** BusEvent type. */
            type: string;

            /** BusEvent customer. */
            customer: string;

            /** BusEvent timeMs. */
            timeMs: number;

            /** BusEvent receivedMs. */
            receivedMs: number;

            /** BusEvent source. */
            source: string;

            /** BusEvent propKeys. */
            propKeys: string[];

            /** BusEvent propValues. */
            propValues: string[];

            /**
             * Creates a new BusEvent instance using the specified properties.
             * @param [properties] Properties to set
             * @returns BusEvent instance
             */
            static create(properties: tally.v1.BusEvent.$Shape): tally.v1.BusEvent & tally.v1.BusEvent.$Shape;
            static create(properties?: tally.v1.BusEvent.$Properties): tally.v1.BusEvent;

            /**
             * Encodes the specified BusEvent message. Does not implicitly {@link tally.v1.BusEvent.verify|verify} messages.
             * @param message BusEvent message or plain object to encode
             * @param [writer] Writer to encode to
             * @returns Writer
             */
            static encode(message: tally.v1.BusEvent.$Properties, writer?: $protobuf.Writer): $protobuf.Writer;

            /**
             * Decodes a BusEvent message from the specified reader or buffer.
             * @param reader Reader or buffer to decode from
             * @param [length] Message length if known beforehand
             * @returns {tally.v1.BusEvent & tally.v1.BusEvent.$Shape} BusEvent
             * @throws {Error} If the payload is not a reader or valid buffer
             * @throws {$protobuf.util.ProtocolError} If required fields are missing
             */
            static decode(reader: ($protobuf.Reader|Uint8Array), length?: number): tally.v1.BusEvent & tally.v1.BusEvent.$Shape;

            /**
             * Gets the type url for BusEvent
             * @param [prefix] Custom type url prefix, defaults to `"type.googleapis.com"`
             * @returns The type url
             */
            static getTypeUrl(prefix?: string): string;
        }

        namespace BusEvent {

            /** Properties of a BusEvent. */
            interface $Properties {

                /** BusEvent id */
                id?: (string|null);

                /** BusEvent type */
                type?: (string|null);

                /** BusEvent customer */
                customer?: (string|null);

                /** BusEvent timeMs */
                timeMs?: (number|null);

                /** BusEvent receivedMs */
                receivedMs?: (number|null);

                /** BusEvent source */
                source?: (string|null);

                /** BusEvent propKeys */
                propKeys?: (string[]|null);

                /** BusEvent propValues */
                propValues?: (string[]|null);

                /** Unknown fields preserved while decoding when enabled */
                $unknowns?: Uint8Array[];
            }

            /** Shape of a BusEvent. */
            type $Shape = tally.v1.BusEvent.$Properties;
        }

        /**
         * Properties of a BusBatch.
         * @deprecated Use tally.v1.BusBatch.$Properties instead.
         */
        interface IBusBatch extends tally.v1.BusBatch.$Properties {
        }

        /** Represents a BusBatch. */
        class BusBatch {

            /**
             * Constructs a new BusBatch.
             * @param [properties] Properties to set
             */
            constructor(properties?: tally.v1.BusBatch.$Properties);

            /** Unknown fields preserved while decoding when enabled */
            $unknowns?: Uint8Array[];

            /** BusBatch events. */
            events: tally.v1.BusEvent.$Properties[];

            /**
             * Creates a new BusBatch instance using the specified properties.
             * @param [properties] Properties to set
             * @returns BusBatch instance
             */
            static create(properties: tally.v1.BusBatch.$Shape): tally.v1.BusBatch & tally.v1.BusBatch.$Shape;
            static create(properties?: tally.v1.BusBatch.$Properties): tally.v1.BusBatch;

            /**
             * Encodes the specified BusBatch message. Does not implicitly {@link tally.v1.BusBatch.verify|verify} messages.
             * @param message BusBatch message or plain object to encode
             * @param [writer] Writer to encode to
             * @returns Writer
             */
            static encode(message: tally.v1.BusBatch.$Properties, writer?: $protobuf.Writer): $protobuf.Writer;

            /**
             * Decodes a BusBatch message from the specified reader or buffer.
             * @param reader Reader or buffer to decode from
             * @param [length] Message length if known beforehand
             * @returns {tally.v1.BusBatch & tally.v1.BusBatch.$Shape} BusBatch
             * @throws {Error} If the payload is not a reader or valid buffer
             * @throws {$protobuf.util.ProtocolError} If required fields are missing
             */
            static decode(reader: ($protobuf.Reader|Uint8Array), length?: number): tally.v1.BusBatch & tally.v1.BusBatch.$Shape;

            /**
             * Gets the type url for BusBatch
             * @param [prefix] Custom type url prefix, defaults to `"type.googleapis.com"`
             * @returns The type url
             */
            static getTypeUrl(prefix?: string): string;
        }

        namespace BusBatch {

            /** Properties of a BusBatch. */
            interface $Properties {

                /** BusBatch events */
                events?: (tally.v1.BusEvent.$Properties[]|null);

                /** Unknown fields preserved while decoding when enabled */
                $unknowns?: Uint8Array[];
            }

            /** Shape of a BusBatch. */
            type $Shape = tally.v1.BusBatch.$Properties;
        }
    }
}
